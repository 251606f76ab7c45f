"""The report stage: tables with the baseline, ranking, figures, determinism, self-contained HTML."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from colorstudy.config import FID_NOT_COMPUTED, load_params
from colorstudy.evaluate import BASELINE, write_outputs
from colorstudy.metrics import METRICS
from colorstudy.report import Doc, ReportError, build_report, differing_params

from test_evaluate import FACES, NO_FID, PARAMS, ROOT, evaluated, run_stage, study_files

pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason="shared face photos not present")
MODELS = ["A", "C"]
SEEDS = [0, 1]


def two_model_params(fid_weights: str = PARAMS.fid_weights) -> dict:
    """params.yaml with models A and C, its evaluate.fid_weights that of the evaluations read."""
    params = load_params(ROOT / "params.yaml")
    params["models"] = {i: params["models"][i] for i in MODELS}
    params["report"] = {"grid_images": 3, "examples": 1}
    params["train"]["seeds"] = SEEDS
    params["evaluate"]["fid_weights"] = fid_weights
    return params


def write_curves(folder: Path, epochs: int, scale: float) -> None:
    """What dvclive writes: plots/metrics/<name>.tsv with columns step and the value."""
    series = {"train/l1": [scale / (e + 1) for e in range(epochs)],
              "val/ab_l1": [0.2 - 0.01 * scale * e for e in range(epochs)],
              "val/ab_error": [20.0 - scale * e for e in range(epochs)],
              "val/baseline_ab_l1": [0.21] * epochs, "val/baseline_ab_error": [21.0] * epochs,
              "lr": [2e-4] * epochs}
    for name, values in series.items():
        path = folder / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        leaf = name.rsplit("/", 1)[-1]
        path.write_text(f"step\t{leaf}\n" + "".join(f"{k}\t{v}\n" for k, v in enumerate(values)))


def report_inputs(tmp_path_factory, params=PARAMS) -> dict[str, Path]:
    """The evaluate stages' outputs for A and C (two seeds each) and the baseline (evaluated
    with ``params``), and training logs: dvc.yaml's layout."""
    files = study_files(tmp_path_factory)
    root = tmp_path_factory.mktemp("report_inputs")
    write_outputs(evaluated(tmp_path_factory, BASELINE, params), root / "eval" / BASELINE,
                  root / "pred" / f"{BASELINE}.npz")
    for model_id in MODELS:
        for seed in SEEDS:
            folder = f"{model_id}/seed{seed}"
            write_outputs(evaluated(tmp_path_factory, model_id, params, seed), root / "eval" / folder,
                          root / "pred" / f"{folder}.npz")
            write_curves(root / "train" / folder, 3, 1.0 + MODELS.index(model_id) + 0.1 * seed)
    return {"eval": root / "eval", "pred": root / "pred", "shards": files["shards"], "train": root / "train",
            "preprocess": files["root"] / "preprocess.json"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return report_inputs(tmp_path_factory)


def make_report(inputs: dict[str, Path], out: Path, params: dict | None = None):
    return build_report(inputs["eval"], inputs["pred"], inputs["shards"], inputs["train"], out,
                        params or two_model_params(), preprocess_json=inputs["preprocess"])


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    return out, make_report(inputs, out)


def test_files_and_ranking(report):
    out, files = report
    for name in ("report.md", "report.html", "ranking.json", "comparison.csv", "figures/comparison_grid.jpg",
                 "figures/examples_A.jpg", "figures/examples_C.jpg", "figures/metrics.png",
                 "figures/training_validation.png", "figures/training_losses.png", "summary/A.json",
                 "summary/baseline.json", "plots/curves.csv", "plots/means.csv"):
        assert (out / name).is_file(), name
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["best"] == ranking["ranking"][0] and sorted(ranking["ranking"]) == MODELS
    assert BASELINE not in ranking["ranking"]
    # random backbones are left out of the ranking, and the formula says so
    assert ranking["metrics"] == ["psnr", "ssim", "ciede2000", "delta_colorfulness"]
    assert "mean rank" in ranking["formula"] and "lpips" in ranking["formula"] and "random" in ranking["formula"]
    # paired with gray on the same photos, per model and per-image ranking metric; ties with #1 named
    assert set(ranking["versus_baseline"]) == set(MODELS)
    for per in ranking["versus_baseline"].values():
        assert set(per) == {"psnr", "ssim", "ciede2000", "delta_colorfulness"}
        assert all(d["ci95_low"] <= d["mean"] <= d["ci95_high"] for d in per.values())
        assert all(d["distinguishable"] == (d["ci95_low"] > 0 or d["ci95_high"] < 0) for d in per.values())
    assert set(ranking["tied_with_best"]) <= set(MODELS) - {ranking["best"]}


def test_report_says_what_the_paired_intervals_show(report):
    """4 test photos and 2 seeds: intervals over both are shown, and no winner is named."""
    out, _ = report
    md = (out / "report.md").read_text()
    ranking = json.loads((out / "ranking.json").read_text())
    assert "## Against the grayscale baseline, paired" in md and "interval over the 4 photos and 2 seeds" in md
    assert ranking["seeds"] == SEEDS and ranking["test_valid"] is False
    assert "**No winner named: cannot tell with 4 photos and 2 seeds.**" in md and "Best model" not in md
    assert set(ranking["tied_with_best"]) == set(MODELS) - {ranking["best"]}
    for model_id in ranking["tied_with_best"]:
        assert re.search(rf"\| {model_id} \|.*\| cannot tell \|", md), model_id
    for per in ranking["versus_baseline"].values():
        assert all(d["verdict"] == "cannot tell with 4 photos and 2 seeds" and not d["distinguishable"]
                   for d in per.values())
    assert "**Against gray on CIEDE2000: cannot tell with 4 photos and 2 seeds** for A, C" in md
    assert "7×7 uniform window" in md


def test_every_mean_shows_its_seed_sd(report):
    out, _ = report
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| A | "))
    assert row.count(" sd ") >= 6
    baseline = next(line for line in md.splitlines() if line.startswith("| grayscale baseline (ab = 0) |"))
    assert " sd " not in baseline  # no seeds, no seed SD


def test_table_has_every_metric_the_baseline_and_provenance(report):
    md = report[0].joinpath("report.md").read_text()
    assert "grayscale baseline (ab = 0)" in md
    for metric in METRICS.values():
        assert metric.label.replace("|", "\\|") in md, metric.label
    assert "↑" in md and "↓" in md and "**" in md
    # every table row of the study tables has a cell per column, with a CI
    table = [line for line in md.splitlines() if line.startswith("| grayscale baseline (ab = 0)")]
    assert len(table) == 2 and all(re.search(r"\d \[\d", line) for line in table)
    # random-backbone numbers say so next to them; the perceptual model's backbone is named
    assert "random init, not comparable to published numbers" in md
    assert "perceptual loss: vgg16: random init, not comparable to published numbers" in md
    # the reference study's published numbers, labelled as other data
    assert "23.71" in md and "not directly comparable" in md
    assert "pip install -r requirements.txt" in md and "dvc repro" in md
    assert "![comparison grid](figures/comparison_grid.jpg)" in md
    # preprocess counts and settings that differ from the reference
    assert "kept: 10 (train 3, val 3, test 4)" in md
    epochs = load_params(ROOT / "params.yaml")["train"]["epochs"]
    assert f"| epochs (`train.epochs`) | {epochs} | 50 |" in md


def test_html_is_self_contained(report):
    text = report[0].joinpath("report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) >= 6 and len(set(images)) == len(images)  # each figure embedded once
    assert all(src.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for src in images)
    assert any(src.startswith("data:image/jpeg") for src in images)  # photos as JPEG
    assert "figures/" not in text.replace("reports/figures", "")
    assert "<table>" in text and "grayscale baseline" in text and "<strong>" in text


def test_comparison_csv(report):
    out = report[0]
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"model", "metric", "mean", "seed_sd", "ci95_low", "ci95_high"}
    assert all(float(r["seed_sd"]) >= 0 for r in rows if r["model"] != BASELINE) and \
        {r["seed_sd"] for r in rows if r["model"] == BASELINE} == {""}
    assert {r["model"] for r in rows} == {*MODELS, BASELINE}
    psnr = [r for r in rows if r["metric"] == "psnr"]
    assert len(psnr) == 3 and all(float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"]) for r in psnr)


def test_summary_is_the_few_headline_numbers(report, inputs):
    """What `dvc metrics show` presents: a file per model, numbers only, a few keys each."""
    out, files = report
    summary = {p.stem: json.loads(p.read_text()) for p in sorted((out / "summary").glob("*.json"))}
    assert set(summary) == {*MODELS, "baseline"}
    headline = ["psnr", "ssim", "ciede2000", "delta_colorfulness"]  # random LPIPS/FID: no headline numbers
    assert list(summary["baseline"]) == headline
    for model_id in MODELS:
        assert list(summary[model_id]) == ["rank", "seeds", *headline]
        assert summary[model_id]["rank"] == files.ranking["ranking"].index(model_id) + 1
        assert summary[model_id]["seeds"] == len(SEEDS)
        per_seed = [json.loads((inputs["eval"] / model_id / f"seed{s}" / "metrics.json").read_text())["psnr"]["mean"]
                    for s in SEEDS]
        assert summary[model_id]["psnr"] == pytest.approx(sum(per_seed) / len(SEEDS), rel=1e-5)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for s in summary.values() for v in s.values())


def test_plot_data_for_the_top_level_plots(report):
    out = report[0]
    with open(out / "plots" / "curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert list(curves[0]) == ["epoch", "model", "val_ab_l1", "val_ab_error"]
    assert {r["model"] for r in curves} == {*MODELS, "grayscale"}
    assert [r["epoch"] for r in curves if r["model"] == "grayscale"] == ["1", "2", "3"]
    with open(out / "plots" / "means.csv") as f:
        means = list(csv.DictReader(f))
    assert {r["model"] for r in means} == {*MODELS, "grayscale"}
    assert all(float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"]) for r in means)


def test_headline_names_its_caveats(report):
    md = report[0].joinpath("report.md").read_text()
    head = md.split("## Results on the test split")[0]
    assert "**No winner named: cannot tell with 4 photos and 2 seeds.**" in head and "**Read with care:**" in head
    assert "randomly initialized backbones" in head
    assert "test images" in head


def test_byte_identical_on_a_second_run(report, inputs, tmp_path):
    out = report[0]
    make_report(inputs, tmp_path)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_missing_baseline_is_an_error(inputs, tmp_path):
    for seed in SEEDS:
        (tmp_path / "eval" / "A" / f"seed{seed}").mkdir(parents=True)
        for f in ("metrics.json", "per_image.parquet"):
            (tmp_path / "eval" / "A" / f"seed{seed}" / f).write_bytes((inputs["eval"] / "A" / f"seed{seed}" / f).read_bytes())
    with pytest.raises(ReportError, match="baseline"):
        make_report({**inputs, "eval": tmp_path / "eval"}, tmp_path / "out")


def test_reference_settings_differ_from_the_cpu_defaults():
    params = two_model_params()
    diffs = {name: (ours, ref) for name, ours, ref in differing_params(params)}
    assert diffs["batch size (`train.batch_size`)"] == ("16", "64")
    assert diffs["image size (`data.image_size`)"] == ("64×64", "256×256")
    assert "learning rate (`train.lr`)" not in diffs  # same as the reference


def test_doc_renders_inline_markup():
    doc = Doc()
    doc.table(["a|b", "c"], [["**x** [1, 2]", "`y`<br>z"]])
    assert "| a\\|b | c |" in doc.markdown()
    html = doc.html(Path("."), "t")
    assert "<strong>x</strong> [1, 2]" in html and "<code>y</code><br>z" in html


def test_stage_script(inputs, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(two_model_params(), sort_keys=False))
    args = [str(inputs[k]) for k in ("eval", "pred", "shards", "train")] + ["reports", str(inputs["preprocess"])]
    assert run_stage("report.py", args, tmp_path, monkeypatch) == 0
    assert json.loads((tmp_path / "reports/ranking.json").read_text())["best"] in MODELS


def test_perceptual_share_is_the_weighted_terms_ratio(tmp_path):
    from colorstudy.report.inputs import read_curves
    from colorstudy.report.phrases import perceptual_share as _perceptual_share

    for name, value in {"train/l1": 9.0, "train/perceptual": 0.5, "train/adversarial": 0.5,
                        "train/discriminator": 7.0}.items():
        path = tmp_path / "C" / "seed0" / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"step\t{name.rsplit('/', 1)[-1]}\n0\t99\n1\t{value}\n")  # the last epoch counts
    assert _perceptual_share(read_curves(tmp_path, "C", 0)) == "5.0 %"  # D's own loss is not G's objective
    assert _perceptual_share({}) == "—"


def test_the_readme_command_for_the_full_study_is_the_reference_settings():
    """docs/study.md's settings are written once (report.reference.REFERENCE_SETTINGS); the
    README's `dvc exp run -S ...` for the full study must set exactly those that differ."""
    import re

    from colorstudy.config import load_params
    from colorstudy.report.reference import REFERENCE_SETTINGS

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("### Full reference settings"):]
    block = block[block.index("```bash"):block.index("```", block.index("```bash") + 3)]
    given = dict(re.findall(r"-S ([\w.]+)=(\S+)", block))
    given.pop("data.dataset"), given.pop("data.path")
    given.pop("models.resnet_encdec.arch.weights")  # the faces study's encoder-decoder, not in docs/study.md
    params = load_params(root / "params.yaml")

    def current(key: str):
        node = params
        for part in key.split("."):
            node = node[part]
        return node

    from colorstudy.models.patchgan import layers_for

    def at_reference_size(key: str):  # `auto` PatchGAN depth, at the reference's 256 px
        value = current(key)
        return layers_for(REFERENCE_SETTINGS["data.image_size"]) if key == "adversarial.layers" and value == "auto" \
            else value

    differing = {k: v for k, v in REFERENCE_SETTINGS.items() if at_reference_size(k) != v}
    assert set(given) == set(differing)
    for key, text in given.items():
        assert yaml.safe_load(text) == differing[key], key


def test_the_models_table_shows_each_objective_with_its_resolved_weights():
    from colorstudy.report.phrases import objective_text

    params = load_params(ROOT / "params.yaml")
    assert objective_text(params, "C_L1_LOW") == "l1 50, perceptual 10, adversarial 1"  # its override
    assert objective_text(params, "A") == "l1 100"  # the global λ
    # a params file without the global sections still names the declared terms
    assert objective_text({"models": {"X": {"generator": "unet", "terms": ["l1"]}}, "trian": {}}, "X") == "l1"


# -- FID off (evaluate.fid_weights=none, the default) -------------------------------------------

TURN_ON = "`evaluate.fid_weights=imagenet`"


@pytest.fixture(scope="module")
def no_fid_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports_no_fid")
    return out, make_report(report_inputs(tmp_path_factory, NO_FID), out, two_model_params("none"))


def test_report_without_fid_says_not_computed_and_how_to_turn_it_on(no_fid_report):
    md = no_fid_report[0].joinpath("report.md").read_text()
    shown = "not computed (`evaluate.fid_weights=none`; set `evaluate.fid_weights=imagenet` to compute it)"
    # the FID column stays, its header says why and how to turn it on (cells: test_a_report_with_fid_shows_its_value)
    assert f"FID (Inception pool3) ↓<br>{shown}" in md
    assert f"FID is {shown}. **Bold**" in md
    assert f"Our FID: {shown}." in md and "Our FID is computed on" not in md
    assert f"FID (Inception pool3): {shown}" in md  # "What was run"
    assert "| FID Inception weights (`evaluate.fid_weights`) | none | imagenet |" in md
    assert "FID: one number per set" not in md and TURN_ON in md


def test_ranking_without_fid_is_over_the_other_metrics_and_says_so(no_fid_report, report):
    files = no_fid_report[1]
    ranking = files.ranking
    assert ranking["metrics"] == ["psnr", "ssim", "ciede2000", "delta_colorfulness"]
    assert "fid" not in ranking["formula"].split("Not ranked:")[0]
    assert f"Not ranked: fid, not computed (`evaluate.fid_weights=none`; set {TURN_ON} to compute it)." \
        in ranking["formula"]
    # the order is that of the same models with FID on (FID random: not ranked either)
    assert ranking["ranking"] == report[1].ranking["ranking"]
    assert "Not ranked" not in report[1].ranking["formula"]
    md = no_fid_report[0].joinpath("report.md").read_text()
    assert f"Formula: {ranking['formula']}" in md


def test_summary_without_fid_says_not_computed(no_fid_report):
    """`dvc metrics show` prints strings: the headline says why there is no FID, never a number."""
    out, files = no_fid_report
    summary = {p.stem: json.loads(p.read_text()) for p in sorted((out / "summary").glob("*.json"))}
    headline = ["psnr", "ssim", "ciede2000", "delta_colorfulness", "fid"]
    assert list(summary["baseline"]) == headline and list(summary["A"]) == ["rank", "seeds", *headline]
    for values in summary.values():
        assert values["fid"] == "not computed (evaluate.fid_weights=none)" and FID_NOT_COMPUTED.startswith(values["fid"][:-1])
        assert all(isinstance(v, (int, float)) for k, v in values.items() if k != "fid")
    with open(out / "comparison.csv") as f:
        assert "fid" not in {r["metric"] for r in csv.DictReader(f)}  # every number computed, no stand-in


def fid_column(md: str) -> dict[str, str]:
    """The FID cell of each row of the results table that has an FID column."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |") and "FID (Inception pool3)" in line)
    column = [c.strip() for c in lines[start].split(" | ")].index(next(
        c.strip() for c in lines[start].split(" | ") if c.startswith("FID (Inception pool3)")))
    cells = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        parts = [c.strip() for c in line.split(" | ")]
        cells[parts[0].lstrip("| ")] = parts[column]
    return cells


def test_a_report_with_fid_shows_its_value(report, inputs, no_fid_report):
    md = report[0].joinpath("report.md").read_text()
    assert "not computed" not in md and "FID: one number per set" in md
    cells = fid_column(md)
    for model_id in MODELS:
        fid = sum(json.loads((inputs["eval"] / model_id / f"seed{s}" / "metrics.json").read_text())["fid"]
                  for s in SEEDS) / len(SEEDS)
        assert float(cells[model_id].split(" sd ")[0].strip("*")) == pytest.approx(fid, abs=0.01), (model_id, cells)
    off = fid_column(no_fid_report[0].joinpath("report.md").read_text())
    assert {off[row] for row in [*MODELS, "grayscale baseline (ab = 0)"]} == {"not computed"}


def test_a_short_training_is_a_headline_caveat_with_its_step_count(tmp_path):
    from colorstudy.report.phrases import training_length

    counts = tmp_path / "preprocess.json"
    counts.write_text(json.dumps({"kept": {"train": 240, "val": 94, "test": 96}}))
    text = training_length({"epochs": 2, "batch_size": 16}, counts)
    assert text.startswith("each model trained 2 epoch(s): 30 optimizer steps of 16 of the 240 training images")
    assert "short of convergence" in text and "the reference study trained 50 epochs" in text
    assert training_length({"epochs": 200, "batch_size": 16}, counts) is None  # 3,000 steps
    assert training_length({"epochs": 2, "batch_size": 16}, tmp_path / "missing.json") is None
