"""Paired, seed-aware comparisons of a committed study, from its own files.

A study's per-image scores live in DVC's cache (``reports/eval/ID/seedS/per_image.parquet``);
``collect`` copies them, every model and seed and the grayscale baseline, into one table in
the study's folder under ``docs/results/``, so that every claim its README makes can be
recomputed from a clone with no DVC pull and no training:

    python docs/results/claims.py collect STUDY_WORKSPACE docs/results/flowers-64px
    python docs/results/claims.py compare docs/results/flowers-64px A:B resnet_unet:A A:baseline
    python docs/results/claims.py rank docs/results/faces-64px docs/results/flowers-64px --models A B ...

``compare`` prints ``a - b`` per metric: the mean over photos and seeds, its 95% interval
over both (:func:`colorstudy.paired.paired_difference`, the report's own test) and the
verdict ("a better", "b better", "cannot tell ..."). ``rank`` ranks the same ids in
several studies with the report's formula (:func:`colorstudy.report.ranking.rank_models`
on each study's ``comparison.csv``), side by side, and names each metric's leader.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from colorstudy.evaluate import BASELINE, PER_IMAGE_FILE
from colorstudy.metrics import METRICS
from colorstudy.paired import paired_difference
from colorstudy.report.inputs import ModelResult
from colorstudy.report.ranking import rank_models

TABLE = "per_image.parquet"
DEFAULT_METRICS = ("psnr", "ssim", "ciede2000", "delta_e76", "psnr_ab", "delta_colorfulness")
RANKED = ("psnr", "ssim", "ciede2000", "delta_colorfulness")  # the committed studies' ranking metrics


def collect(workspace: Path, study_dir: Path) -> Path:
    """Every ``reports/eval/ID/seedS`` table of ``workspace`` (and the baseline's), stacked.
    The ids and seeds are those of ``study_dir/ranking.json``: copy the report's files first."""
    ranking = json.loads((study_dir / "ranking.json").read_text(encoding="utf-8"))
    eval_dir = workspace / "reports" / "eval"
    tables = [pd.read_parquet(eval_dir / BASELINE / PER_IMAGE_FILE).assign(model=BASELINE, seed=-1)]
    for model_id in ranking["ranking"]:
        for seed in ranking["seeds"]:
            table = pd.read_parquet(eval_dir / model_id / f"seed{seed}" / PER_IMAGE_FILE)
            tables.append(table.assign(model=model_id, seed=seed))
    out = study_dir / TABLE
    table = pd.concat(tables, ignore_index=True).drop(columns="path")  # the id names the photo
    table.to_parquet(out, index=False, compression="zstd")
    return out


def runs_of(table: pd.DataFrame, model_id: str) -> list[pd.DataFrame]:
    """One per-image table per seed of ``model_id`` (one for the baseline), in test-id order."""
    rows = table[table["model"] == model_id]
    if rows.empty:
        raise SystemExit(f"no model {model_id!r} in the table; it has: {', '.join(table['model'].unique())}")
    return [group.reset_index(drop=True) for _, group in rows.groupby("seed", sort=True)]


def compare(study_dir: Path, pairs: list[str], metrics: list[str]) -> list[str]:
    table = pd.read_parquet(study_dir / TABLE)
    lines = ["| a − b | metric | mean [95% interval] | verdict |", "|---|---|---|---|"]
    for pair in pairs:
        a, _, b = pair.partition(":")
        for metric in metrics:
            diff = paired_difference(runs_of(table, a), runs_of(table, b), metric, METRICS[metric].direction)
            lines.append(f"| {a} − {b} | {metric} | {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] "
                         f"| {diff.verdict} |")
    return lines


def rank(study_dirs: list[Path], models: list[str]) -> list[str]:
    """Rank (mean rank) of ``models`` within each study, and each metric's leader per study."""
    orders, leaders = [], []
    for study in study_dirs:
        means = pd.read_csv(study / "comparison.csv").pivot(index="model", columns="metric", values="mean")
        missing = sorted(set(models) - set(means.index))
        if missing:
            raise SystemExit(f"{study}: no {', '.join(missing)} in comparison.csv")
        results = [ModelResult(m, {k: float(means.loc[m, k]) for k in RANKED}, pd.DataFrame(), None, [], [])
                   for m in models]
        order, mean_rank, ranks = rank_models(results, RANKED)
        orders.append({m: (k + 1, mean_rank[m]) for k, m in enumerate(order)})
        leaders.append({k: ranks[k].idxmin() for k in RANKED})  # rank 1 = best by the metric's direction
    names = [study.name for study in study_dirs]
    lines = ["| id | " + " | ".join(f"{n} rank (mean rank)" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in sorted(models, key=lambda m: orders[-1][m][0]):
        lines.append(f"| {m} | " + " | ".join(f"{o[m][0]} ({o[m][1]:.2f})" for o in orders) + " |")
    lines.append("")
    lines.append("| metric | " + " | ".join(f"{n} leader" for n in names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    lines += [f"| {k} | " + " | ".join(leader[k] for leader in leaders) + " |" for k in RANKED]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("collect", help="stack a study workspace's per-image tables into STUDY_DIR")
    c.add_argument("workspace", type=Path)
    c.add_argument("study_dir", type=Path)
    p = commands.add_parser("compare", help="paired differences a - b over photos and seeds")
    p.add_argument("study_dir", type=Path)
    p.add_argument("pairs", nargs="+", metavar="A:B", help="study ids (or 'baseline' for gray)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), choices=sorted(METRICS))
    r = commands.add_parser("rank", help="the same ids ranked in several studies, side by side")
    r.add_argument("study_dirs", nargs="+", type=Path)
    r.add_argument("--models", nargs="+", required=True)
    args = parser.parse_args()
    if args.command == "collect":
        print(collect(args.workspace, args.study_dir))
    elif args.command == "compare":
        print("\n".join(compare(args.study_dir, args.pairs, args.metrics)))
    else:
        print("\n".join(rank(args.study_dirs, args.models)))


if __name__ == "__main__":
    main()
