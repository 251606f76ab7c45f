"""Evaluation of one study model (or the grayscale baseline) on the test split.

For every test image the model predicts ab from L (eval mode, bf16 autocast on a GPU
as ``colorize`` runs it), the prediction is clipped to the valid ab range
(``lab.clip_ab``) and joined with the image's own L (``lab.colorize``); the ground
truth is the same image built from its stored L and ab. The **grayscale baseline**
predicts ab = 0: the lightness alone, what every model must beat.

Outputs (see :func:`write_outputs`):

* ``metrics.json`` (a DVC metrics file): for every per-image metric of
  ``colorstudy.metrics.METRICS`` its mean over the test images and a percentile
  bootstrap 95% CI over source photos (the manifest's ``group``: crops of one photo
  are resampled together; ``evaluate.bootstrap`` resamples, ``evaluate.seed``),
  ``n_images`` and ``n_photos``,
  the set-level ``fid``, and where every backbone's weights came from (LPIPS, FID,
  and the checkpoint's own: generator encoder and perceptual-loss network). With
  ``evaluate.fid_weights=none`` there is no ``fid`` key (no number stands in for it) and
  ``provenance.fid`` is ``config.FID_NOT_COMPUTED``, which names the param that turns it on. Numbers
  are rounded to 6 significant digits, so the file is stable across platforms' last
  float bits.
* ``per_image.parquet``: one row per test image (id, source path, group, every metric).
* the predictions file: the colorized test images as sRGB uint8 ``[N, H, W, 3]``
  with their ids (a zip written with fixed timestamps, so equal images are equal bytes),
  and, for a run without an FID reference (the baseline) that computes FID, the ground
  truth's FID features, which the other runs reuse (``fid_reference``).

Same inputs, same device: same outputs, byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from colorstudy import lab
from colorstudy.checkpoint import Checkpoint
from colorstudy.config import FID_NOT_COMPUTED, FID_OFF, NOT_COMPUTED, EvaluateParams
from colorstudy.data.shards import LabShards
from colorstudy.metric_nets import FIDExtractor, LPIPSMetric, frechet_distance
from colorstudy.intervals import bootstrap_ci
from colorstudy.metrics import METRICS, MetricBatch, compute, workload
from colorstudy.runtime import autocast, inference, resolve_device
from colorstudy.weights import describe

BASELINE = "baseline"
SIGNIFICANT_DIGITS = 6
METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.parquet"
NO_BACKBONE = "none (no pretrained part)"
NOT_USED = "not used"

# Metrics reported per image (mean + CI) and per set, in report order.
IMAGE_METRICS: tuple[str, ...] = tuple(name for name, m in METRICS.items() if m.scope == "image")
SET_METRICS: tuple[str, ...] = tuple(name for name, m in METRICS.items() if m.scope == "set")


def round_sig(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits (±inf and 0 unchanged)."""
    if not math.isfinite(x) or x == 0.0:
        return float(x)
    return float(f"{x:.{digits}g}")


@dataclass
class Evaluation:
    """Everything the evaluate stage writes, in memory."""

    model_id: str
    summary: dict[str, Any]  # the metrics.json document
    per_image: pd.DataFrame  # id, path, one column per metric
    ids: list[str]
    rgb: np.ndarray  # uint8 [N, H, W, 3], the colorized test images
    fid_key: str = ""  # identifies the ground-truth FID features: images, extractor, batching
    # computed here (None: taken from a reference file, or FID not computed)
    fid_true_features: np.ndarray | None = None


@functools.lru_cache(maxsize=2)
def _metric_nets(lpips_weights: str, fid_weights: str,
                 device: torch.device) -> tuple[LPIPSMetric, FIDExtractor | None]:
    # Frozen, stateless networks from fixed weights or a fixed seed: built once per process.
    # FID off: no Inception is built, so pytorch_fid is never imported
    fid_net = None if fid_weights == FID_OFF else FIDExtractor(fid_weights, device=device)
    return LPIPSMetric(lpips_weights, device=device), fid_net


def _checkpoint_provenance(trained: Checkpoint | None) -> dict[str, str]:
    """Report labels for the backbones a checkpoint was trained with."""
    if trained is None:
        return {"generator_encoder": NO_BACKBONE, "perceptual_loss": NOT_USED}
    prov = trained.provenance
    generator = prov.get("generator") or {}
    perceptual = prov.get("perceptual") or {}
    return {
        "generator_encoder": describe(generator) if generator else NO_BACKBONE,
        "perceptual_loss": describe(perceptual) if perceptual else NOT_USED,
    }


def _checkpoint_summary(trained: Checkpoint) -> dict[str, Any]:
    """Which checkpoint was scored, as the metrics file records it."""
    return {"architecture": trained.architecture,
            "epoch": trained.epoch,
            # the run's length: "epoch 1 of 4" says more than "epoch 1"
            "epochs": trained.run.train.epochs if trained.run is not None else -1,
            "select": str(trained.selected.get("criterion", "?")),
            # which machine kind's rounding the weights carry: runs compare on it
            "trained_on": trained.trained_on}


def load_predictor(model: str | Path, device: torch.device) -> tuple[str, Callable[[torch.Tensor], torch.Tensor],
                                                                     dict[str, Any] | None]:
    """``(model_id, predict, checkpoint or None)`` for a checkpoint path or ``baseline``.

    ``predict`` maps normalized L ``[B,1,H,W]`` to normalized ab ``[B,2,H,W]`` float32,
    already clipped to the valid ab range.
    """
    if str(model) == BASELINE:
        return BASELINE, lambda L: torch.zeros((L.shape[0], 2, *L.shape[2:]), dtype=torch.float32,
                                               device=L.device), None
    trained = Checkpoint.load(model, map_location=device)
    generator = trained.model(device)

    def predict(L: torch.Tensor) -> torch.Tensor:
        with inference(generator), autocast(device):
            ab_n = generator(L).float()
        return lab.normalize_ab(lab.clip_ab(lab.denormalize_ab(ab_n)))

    return trained.model_id or Path(model).parent.name, predict, trained


def load_fid_reference(path: str | Path) -> tuple[str, np.ndarray]:
    """``(key, ground-truth FID features)`` saved in a predictions file (the baseline's)."""
    with np.load(path, allow_pickle=False) as f:
        if "fid_true_features" not in f:
            raise ValueError(f"{path} holds no ground-truth FID features (only a run without a reference, "
                             f"e.g. the baseline's, saves them)")
        return str(f["fid_key"][0]), f["fid_true_features"]


@dataclass
class BatchScores:
    """What one batch of test images contributes: per-image metrics (float64), the
    photos as uint8 ``[B, 3, H, W]`` and the FID features ``[B, 2048]`` (float64)."""

    values: dict[str, np.ndarray]
    u8_pred: torch.Tensor
    u8_true: torch.Tensor
    feats_pred: np.ndarray | None  # None: FID not computed
    feats_true: np.ndarray | None  # only when asked for (no FID reference)


def score_batch(L: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor, lpips_net: LPIPSMetric,
                fid_net: FIDExtractor | None, *, truth_features: bool) -> BatchScores:
    """Every metric of one batch (normalized L ``[B,1,H,W]``, predicted and true ab ``[B,2,H,W]``):
    the per-batch work of :func:`evaluate`, also what ``benchmarks/metrics_speed.py`` times.
    ``fid_net=None``: no FID features (``evaluate.fid_weights=none``)."""
    batch = MetricBatch.from_lab(L, ab_pred, ab_true, lpips=lpips_net)
    values = {name: v.double().cpu().numpy() for name, v in compute(batch).items()}
    # FID sees the photos as saved files hold them (uint8), as pytorch-fid on image files does
    u8_pred, u8_true = batch.u8_pred.to(torch.uint8), batch.u8_true.to(torch.uint8)
    if fid_net is None:
        return BatchScores(values, u8_pred, u8_true, None, None)
    feats_pred = fid_net(u8_pred).double().cpu().numpy()
    feats_true = fid_net(u8_true).double().cpu().numpy() if truth_features else None
    return BatchScores(values, u8_pred, u8_true, feats_pred, feats_true)


def _fid_value(fid_net: FIDExtractor, params: EvaluateParams, device: torch.device, truth_sha256: str,
               feats_pred: list[np.ndarray], feats_true: list[np.ndarray],
               reference: tuple[str, np.ndarray] | None, fid_reference: str | Path | None,
               ) -> tuple[float, str, np.ndarray | None]:
    """``(FID, key of the truth's features, the truth's features when computed here)``."""
    fid_key = json.dumps({"truth_sha256": truth_sha256, "extractor": fid_net.provenance,
                          "batch_size": params.batch_size, "device": device.type, "layout": fid_net.layout,
                          "torch": str(torch.__version__)}, sort_keys=True)
    if reference is None:
        true_features = np.concatenate(feats_true)
        return frechet_distance(np.concatenate(feats_pred), true_features), fid_key, true_features
    if reference[0] != fid_key:
        raise ValueError(f"{fid_reference}: its ground-truth FID features were made from other test images "
                         f"or with another extractor or batching; rerun the stage that wrote it "
                         f"(evaluate_baseline) with the current shards and params")
    return frechet_distance(np.concatenate(feats_pred), reference[1]), fid_key, None


def _read_reference(fid_reference: str | Path | None, fid_net: FIDExtractor | None) -> tuple[str, np.ndarray] | None:
    if fid_reference is None:
        return None
    if fid_net is None:
        # FID off: the baseline's file holds no features, and none are needed; the
        # stage's command line (dvc.yaml) still names it, so a wrong path still fails
        if not Path(fid_reference).is_file():
            raise FileNotFoundError(f"{fid_reference}: no such FID reference file")
        return None
    return load_fid_reference(fid_reference)


def evaluate(model: str | Path, shards_dir: str | Path, params: EvaluateParams, *,
             fid_reference: str | Path | None = None, progress: bool = False) -> Evaluation:
    """Score ``model`` (a checkpoint path, or ``"baseline"``) on the test split of ``shards_dir``.

    The ground truth's FID features are the same for every model: ``fid_reference`` (a
    predictions file that holds them, the baseline's) saves computing them again, which
    is half of the evaluation's time on a CPU. They are used only when they were made
    from the same ground-truth images with the same extractor and batching (else an error).
    With ``params.fid_weights == "none"`` no FID is computed; ``fid_reference`` must exist
    (the stage's command line names it either way) but is not read.
    """
    device = resolve_device(params.device)
    shards = LabShards(shards_dir)
    rows = shards.rows("test")
    L_all, ab_all = shards.split("test", device=device)
    n = len(rows)
    if n < 2:
        raise ValueError(f"{shards_dir}: the test split has {n} image(s); evaluation needs at least 2 "
                         f"(FID fits a covariance). Use more photos or a larger data.test_fraction.")
    model_id, predict, trained = load_predictor(model, device)
    lpips_net, fid_net = _metric_nets(params.lpips_weights, params.fid_weights, device)

    values: dict[str, list[np.ndarray]] = {}
    rgb_parts: list[np.ndarray] = []
    feats_pred: list[np.ndarray] = []
    feats_true: list[np.ndarray] = []
    reference = _read_reference(fid_reference, fid_net)
    truth_digest = hashlib.sha256()
    with workload(L_all[:, 0].numel()):  # the whole split: compile the metrics only if that pays off
        for start in tqdm(range(0, n, params.batch_size), desc=f"evaluate {model_id}", unit="batch",
                          disable=not progress):
            L = L_all[start:start + params.batch_size]
            scores = score_batch(L, predict(L), ab_all[start:start + params.batch_size], lpips_net, fid_net,
                                 truth_features=reference is None)
            for name, v in scores.values.items():
                values.setdefault(name, []).append(v)
            if scores.feats_pred is not None:
                feats_pred.append(scores.feats_pred)
                truth_digest.update(scores.u8_true.cpu().numpy().tobytes())
            if scores.feats_true is not None:
                feats_true.append(scores.feats_true)
            rgb_parts.append(scores.u8_pred.permute(0, 2, 3, 1).cpu().numpy())

    per_image = pd.DataFrame({"id": rows["id"].astype(str).tolist(), "path": rows["path"].astype(str).tolist(),
                              "group": rows["group"].astype(str).tolist()})
    groups = per_image["group"].to_numpy()
    n_photos = int(per_image["group"].nunique())
    summary: dict[str, Any] = {"model": model_id, "n_images": n, "n_photos": n_photos}
    for name in IMAGE_METRICS:
        x = np.concatenate(values[name])
        per_image[name] = x
        mean, low, high = bootstrap_ci(x, n_resamples=params.bootstrap, seed=params.seed, groups=groups)
        summary[name] = {"mean": round_sig(mean), "ci95_low": round_sig(low), "ci95_high": round_sig(high)}
    fid_key, true_features, fid_label = "", None, FID_NOT_COMPUTED
    if fid_net is not None:
        fid_value, fid_key, true_features = _fid_value(fid_net, params, device, truth_digest.hexdigest(), feats_pred,
                                                       feats_true, reference, fid_reference)
        summary["fid"] = round_sig(fid_value)
        fid_label = describe(fid_net.provenance)
    summary["provenance"] = {
        "lpips": describe(lpips_net.provenance),
        "fid": fid_label,
        **_checkpoint_provenance(trained),
    }
    if trained is not None:
        summary["checkpoint"] = _checkpoint_summary(trained)
    summary["aggregation"] = (f"mean over the {n} test images; percentile bootstrap 95% CI over the {n_photos} "
                              f"source photos, crops of a photo drawn together ({params.bootstrap} resamples, "
                              f"seed {params.seed}); fid " + ("per set" if fid_net is not None else NOT_COMPUTED))
    return Evaluation(model_id, summary, per_image, per_image["id"].tolist(), np.concatenate(rgb_parts), fid_key,
                      true_features)


# -- files ----------------------------------------------------------------------------

def _zip_entry(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: equal arrays, equal bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, buffer.getvalue())


def save_predictions(path: str | Path, ids: list[str], rgb: np.ndarray, *, fid_key: str = "",
                     fid_true_features: np.ndarray | None = None) -> None:
    """An ``.npz`` (readable by ``np.load``) with ``ids`` [N] (str) and ``rgb`` uint8 [N, H, W, 3],
    plus, when given, the ground truth's FID features and their key (see :func:`evaluate`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        _zip_entry(zf, "ids.npy", np.asarray(ids, dtype=str))
        _zip_entry(zf, "rgb.npy", rgb.astype(np.uint8, copy=False))
        if fid_true_features is not None:
            _zip_entry(zf, "fid_key.npy", np.asarray([fid_key], dtype=str))
            _zip_entry(zf, "fid_true_features.npy", fid_true_features.astype(np.float64, copy=False))
    tmp.replace(path)


def load_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, rgb uint8 [N, H, W, 3])`` of a predictions file."""
    with np.load(path, allow_pickle=False) as f:
        return [str(i) for i in f["ids"]], f["rgb"]


def write_outputs(result: Evaluation, report_dir: str | Path, predictions_path: str | Path) -> None:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.summary, indent=2, ensure_ascii=False) + "\n"
    (report_dir / METRICS_FILE).write_text(text, encoding="utf-8")
    result.per_image.to_parquet(report_dir / PER_IMAGE_FILE, index=False)
    save_predictions(predictions_path, result.ids, result.rgb, fid_key=result.fid_key,
                     fid_true_features=result.fid_true_features)


def read_metrics(report_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(report_dir) / METRICS_FILE).read_text(encoding="utf-8"))


__all__ = ["BASELINE", "BatchScores", "Evaluation", "IMAGE_METRICS", "SET_METRICS", "evaluate", "load_fid_reference",
           "load_predictions",
           "load_predictor", "read_metrics", "round_sig", "save_predictions", "score_batch", "write_outputs"]
