"""Training data resident or streamed: the same values, the same batches, on every rank."""

from __future__ import annotations

import pytest
import torch

from colorstudy.data.loader import EpochBatches, ResidentSplit, StreamedSplit, load_split
from colorstudy.data.shards import LabShards

CPU = torch.device("cpu")


def test_a_streamed_split_gives_the_resident_values_bit_for_bit(faces_shards):
    shards = LabShards(faces_shards)
    resident, streamed = ResidentSplit(shards, "train", CPU), StreamedSplit(shards, "train", CPU)
    assert len(resident) == len(streamed) > 300
    idx = torch.randperm(len(resident), generator=torch.Generator().manual_seed(0))[:97]
    for a, b in zip(resident.fetch(idx), streamed.fetch(idx)):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    for (La, aba), (Lb, abb) in zip(resident.chunks(64), streamed.chunks(64), strict=True):
        assert torch.equal(La, Lb) and torch.equal(aba, abb)


def test_the_memory_budget_decides_and_says_so(faces_shards, capsys):
    shards = LabShards(faces_shards)
    assert isinstance(load_split(shards, "val", CPU), ResidentSplit)  # a few MB: fits any machine
    streamed = load_split(shards, "val", CPU, budget_bytes=1024)
    assert isinstance(streamed, StreamedSplit) and streamed.streamed
    assert "over the 0.00 GiB budget: streaming batches from the memory-mapped shards" in capsys.readouterr().out


@pytest.mark.parametrize("kind", [ResidentSplit, StreamedSplit])
def test_ranks_share_each_global_batch_and_together_see_it_whole(faces_shards, kind):
    data = kind(LabShards(faces_shards), "train", CPU)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))
    single = list(EpochBatches(data, order, batch_size=8, steps=5))
    ranks = [list(EpochBatches(data, order, batch_size=8, steps=5, rank=r, world=2)) for r in range(2)]
    assert len(single) == 5 and all(len(L) == 8 for L, _ in single)
    for step, (L, ab) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][step][0], ranks[1][step][0]]), L)
        assert torch.equal(torch.cat([ranks[0][step][1], ranks[1][step][1]]), ab)


def test_a_failing_read_reaches_the_training_loop(faces_shards, monkeypatch):
    data = StreamedSplit(LabShards(faces_shards), "train", CPU)

    def broken(idx):
        raise OSError("shard unreadable")

    monkeypatch.setattr(data, "gather_host", broken)
    batches = EpochBatches(data, torch.arange(len(data)), batch_size=4, steps=3)
    with pytest.raises(OSError, match="shard unreadable"):
        list(batches)


def test_stopping_early_leaves_no_prefetch_thread_behind(faces_shards):
    import threading

    data = StreamedSplit(LabShards(faces_shards), "train", CPU)
    batches = EpochBatches(data, torch.arange(len(data)), batch_size=4, steps=50)
    for i, _ in enumerate(batches):
        if i == 2:
            break
    assert not any(t.name == "colorstudy-prefetch" for t in threading.enumerate())
    assert batches.wait_seconds >= 0


def test_reused_buffers_give_the_same_batches_two_buffers_in_turn(faces_shards):
    data = ResidentSplit(LabShards(faces_shards), "train", CPU)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    fresh = [(L.clone(), ab.clone()) for L, ab in EpochBatches(data, order, batch_size=6, steps=4)]
    pointers = []
    for (L, ab), (fL, fab) in zip(EpochBatches(data, order, batch_size=6, steps=4, reuse_buffers=True), fresh,
                                  strict=True):
        assert torch.equal(L, fL) and torch.equal(ab, fab)
        pointers.append(L.data_ptr())
    assert pointers[0] == pointers[2] != pointers[1]


def test_chunks_are_views_in_stored_order(faces_shards):
    data = ResidentSplit(LabShards(faces_shards), "val", CPU)
    chunks = list(data.chunks(16))
    assert chunks[0][0].data_ptr() == data.L.data_ptr()  # no copy
    assert sum(len(L) for L, _ in chunks) == len(data) and all(len(L) == 16 for L, _ in chunks[:-1])
