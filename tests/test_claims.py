"""docs/results/claims.py: the committed studies' claims recomputed from their own files."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/per_image.parquet"))
_spec = importlib.util.spec_from_file_location("claims", ROOT / "docs" / "results" / "claims.py")
claims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims)


def _per_image(values: np.ndarray) -> pd.DataFrame:
    ids = [f"p{k}" for k in range(len(values))]
    return pd.DataFrame({"id": ids, "path": ids, "group": ids, "ciede2000": values, "psnr": 30 - values})


def test_collect_stacks_every_seed_and_the_baseline_and_compare_reads_them_back(tmp_path):
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(5, 15, 12)
    eval_dir = tmp_path / "ws" / "reports" / "eval"
    runs = {("baseline", None): difficulty + 10}
    for seed in (0, 1):
        runs[("X", seed)] = difficulty - 2 + rng.normal(0, 0.1, 12)
        runs[("Y", seed)] = difficulty + rng.normal(0, 0.1, 12)
    for (model, seed), values in runs.items():
        folder = eval_dir / model / (f"seed{seed}" if seed is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        _per_image(values).to_parquet(folder / "per_image.parquet")
    study = tmp_path / "study"
    study.mkdir()
    (study / "ranking.json").write_text(json.dumps({"ranking": ["X", "Y"], "seeds": [0, 1]}))

    table = pd.read_parquet(claims.collect(tmp_path / "ws", study))
    assert len(table) == 12 * 5 and set(table["model"]) == {"baseline", "X", "Y"}
    rows = claims.compare(study, ["X:Y", "X:baseline"], ["ciede2000"])
    means = [float(row.split(" | ")[2].split()[0]) for row in rows[2:]]
    assert means == pytest.approx([-2.0, -12.0], abs=0.05)
    assert rows[2].endswith("| a better |") and rows[3].endswith("| a better |")
    with pytest.raises(SystemExit, match="no model 'Z'.*X"):
        claims.compare(study, ["Z:X"], ["ciede2000"])


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_a_committed_table_gives_the_reports_own_intervals_against_gray(study):
    """The committed per-image table is what the committed report was computed from."""
    ranking = json.loads((study / "ranking.json").read_text(encoding="utf-8"))
    table = pd.read_parquet(study / claims.TABLE)
    for model_id, by_metric in ranking["versus_baseline"].items():
        for metric, reported in by_metric.items():
            diff = claims.paired_difference(claims.runs_of(table, model_id), claims.runs_of(table, "baseline"),
                                            metric, claims.METRICS[metric].direction)
            for ours, theirs in ((diff.mean, reported["mean"]), (diff.low, reported["ci95_low"]),
                                 (diff.high, reported["ci95_high"])):
                assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6), (model_id, metric)
            assert diff.verdict == reported["verdict"]


@pytest.mark.parametrize("study", sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/ranking.json")),
                         ids=lambda p: p.name)
def test_rank_over_every_id_is_the_reports_own_ranking(study):
    ranking = json.loads((study / "ranking.json").read_text(encoding="utf-8"))
    lines = claims.rank([study], ranking["ranking"])
    ranked = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:2 + len(ranking["ranking"])]]
    assert ranked == ranking["ranking"]
