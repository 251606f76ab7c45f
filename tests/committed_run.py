"""The committed run as the comparator tests see it: its numbers files, flattened, in
the seeds layout, and helpers that change them (no test here).

The tests need seeds of a known spread, so each model's committed seed-0 file (or, in the
pre-seeds layout, its one file) stands in for three seeds around it (:func:`seeded`): the
expectations then follow from SEED_SD, not from how far the committed seeds happen to be apart.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from colorstudy.compare import TRAINED_ON, Comparison, Metrics, flatten_metrics, is_compared
from colorstudy.compare_seeds import EVAL_SEED

ROOT = Path(__file__).resolve().parents[1]
MODEL = "C"  # a trained model with a CI on every test metric
EVAL = f"reports/eval/{MODEL}/seed1/metrics.json"  # its middle seed
SEED_MEANS = f"reports/eval/{MODEL}/seed*"  # its seed-mean rows
BASELINE = "reports/eval/baseline/metrics.json"
SEEDS = (0, 1, 2)
SEED_SD = 0.5  # the stand-in seeds' spread of every judged metric, in committed CI half-widths
OLD_EVAL = re.compile(r"reports/eval/(?P<model>[^/]+)/metrics\.json")
DESCRIPTIVE = ("colorfulness", "colorfulness_signed")


def seeded(metrics: dict[str, Metrics]) -> dict[str, Metrics]:
    """The committed run in the seeds layout with stand-in seeds: every trained model's seed-0
    file (or pre-seeds file) as seeds 0, 1, 2 whose judged means and bounds sit at -1, 0, +1
    times SEED_SD half-widths (seed SD = SEED_SD half-widths), and summaries with `seeds`."""
    out: dict[str, Metrics] = {}
    for path, values in metrics.items():
        seed_file = EVAL_SEED.fullmatch(path)
        if seed_file and not path.endswith("/seed0/metrics.json"):
            continue  # rebuilt from seed 0 below
        match = OLD_EVAL.fullmatch(path.replace("/seed0/metrics.json", "/metrics.json")) if seed_file \
            else OLD_EVAL.fullmatch(path)
        if path.startswith("reports/summary/") and not path.endswith("baseline.json"):
            values = {**values, "seeds": len(SEEDS)}  # already so in the seeds layout
        if not match or match["model"] == "baseline":
            out[path] = values
            continue
        for k, seed in enumerate(SEEDS):
            run = dict(values)
            for stem in {n.rsplit(".", 1)[0] for n in values if n.endswith(".ci95_low")} - set(DESCRIPTIVE):
                offset = (k - 1) * SEED_SD * (values[f"{stem}.ci95_high"] - values[f"{stem}.ci95_low"]) / 2
                for leaf in ("mean", "ci95_low", "ci95_high"):
                    run[f"{stem}.{leaf}"] = values[f"{stem}.{leaf}"] + offset
            out[f"reports/eval/{match['model']}/seed{seed}/metrics.json"] = run
    return out


@pytest.fixture(scope="module")
def committed() -> dict[str, Metrics]:
    """Every numbers file of the committed run, flattened as dvc flattens metrics."""
    if not (ROOT / BASELINE).is_file():
        pytest.skip("the committed reports/ are not in this checkout")
    texts = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "reports").rglob("*.json")}
    flat = {path: flatten_metrics(json.loads(text)) for path, text in sorted(texts.items())}
    return {path: values for path, values in seeded(flat).items() if is_compared(path)}


@pytest.fixture(scope="module")
def lock() -> dict:
    return yaml.safe_load((ROOT / "dvc.lock").read_text())


def changed(metrics: dict[str, Metrics], path: str, name: str, value: object) -> dict[str, Metrics]:
    out = copy.deepcopy(metrics)
    out[path][name] = value
    return out


def half_width(metrics: dict[str, Metrics], path: str, stem: str) -> float:
    return (metrics[path][f"{stem}.ci95_high"] - metrics[path][f"{stem}.ci95_low"]) / 2


def row(result: Comparison, path: str, name: str):
    return next(r for r in result.rows if (r.path, r.metric) == (path, name))


def seed_files(metrics: dict[str, Metrics], model: str = MODEL) -> list[str]:
    return sorted(p for p in metrics if EVAL_SEED.fullmatch(p) and EVAL_SEED.fullmatch(p)["model"] == model)


def n_seed_tests(metrics: dict[str, Metrics]) -> int:
    """Models x judged metrics: the Bonferroni family of the seed-mean rule."""
    files = [p for p in metrics if EVAL_SEED.fullmatch(p) and p.endswith("seed0/metrics.json")]
    stems = [n[:-len(".ci95_low")] for p in files for n in metrics[p] if n.endswith(".ci95_low")]
    return sum(stem not in DESCRIPTIVE for stem in stems)


def trained_on(metrics: dict[str, Metrics], kind: str) -> dict[str, Metrics]:
    out = copy.deepcopy(metrics)
    for path, values in out.items():
        if EVAL_SEED.fullmatch(path):
            values[TRAINED_ON] = kind
    return out


HERE, THERE = "AMD EPYC, AVX2 kernels", "Xeon, AVX512 kernels"


def shifted(metrics: dict[str, Metrics], name: str, by: float, model: str = MODEL) -> dict[str, Metrics]:
    """Every seed of ``model`` with ``name`` moved by ``by``: a real change of the model."""
    out = copy.deepcopy(metrics)
    for path in seed_files(out, model):
        out[path][name] += by
    return out
