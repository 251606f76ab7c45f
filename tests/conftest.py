"""Shared fixtures: real photos from ../shared/datasets turned into small Lab shards."""

from __future__ import annotations

import copy
import dataclasses
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from colorstudy.config import DataParams, load_params
from colorstudy.data.preprocess import preprocess
from colorstudy.data.sources import materialize
from colorstudy.study import RunSpec, resolve_model

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "datasets" / "faces"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The test models are tiny: on 2 cores, OpenMP barrier waits cost more than a
    second thread saves, badly so when anything else runs (measured 1-40x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def faces_params(image_size: int = 32) -> DataParams:
    return DataParams(dataset="folder", path=str(FACES), image_size=image_size, val_fraction=0.15,
                      test_fraction=0.15)


@pytest.fixture(scope="session")
def faces_shards(tmp_path_factory) -> Path:
    """All 750 faces at 32x32 as shards, split 70/15/15 by hash, as the faces study did."""
    if not FACES.is_dir():
        pytest.skip(f"{FACES} is missing (the shared photo sets sit beside the repo)")
    root = tmp_path_factory.mktemp("faces")
    params = faces_params()
    materialize(root / "raw", params)
    preprocess(root / "raw", root / "shards", params, progress=False)
    return root / "shards"


@pytest.fixture
def study_params() -> dict:
    """The default params.yaml, shrunk to train in seconds on 32x32 shards."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"]["image_size"] = 32
    params["train"].update(epochs=3, decay_epochs=1, batch_size=32, width=4, device="cpu")
    params["adversarial"]["width"] = 4
    return params


def run_spec(model_id: str, **changes) -> RunSpec:
    """A valid run spec for a checkpoint a test makes by hand: study id A's, with ``changes``."""
    return dataclasses.replace(resolve_model(load_params(ROOT / "params.yaml"), "A"), model_id=model_id, **changes)


@dataclass
class OfflineHub:
    home: Path  # TORCH_HOME, empty until a test puts a weight file there
    attempts: list[str] = field(default_factory=list)  # URLs something tried to download

    @property
    def checkpoints(self) -> Path:
        """Where torch.hub keeps weight files (``load_state_dict_from_url``)."""
        return self.home / "hub" / "checkpoints"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> OfflineHub:
    """An empty torch hub cache and no network, as on the dev and CI machines: every
    download attempt is recorded and fails at once."""
    hub = OfflineHub(tmp_path / "torch-home")
    monkeypatch.setenv("TORCH_HOME", str(hub.home))

    def offline(url: str, *args, **kwargs) -> None:
        hub.attempts.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return hub
