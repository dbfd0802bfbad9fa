"""TrainLoader: PK batches through the CPU DALI pipeline — shapes, labels, determinism, resume, bad frames, threads,
and the device each rank's loader thread uses."""

from __future__ import annotations

import itertools
import shutil
import tarfile
import threading

import pytest
import torch

from xfd.cli.shard import main as shard_main
from xfd.data.errors import DataError
from xfd.data.index import ShardIndex
from xfd.data.loader import TrainLoader
from xfd.distributed import rank_device
from xfd.config import AugmentConfig
from xfd.data.pipeline import FramePipeline
from xfd.data.pk import PKSampler

from dataset_builders import write_detreidx

P, K, L = 2, 2, 4
SIZE = (32, 16)
AUGMENT = AugmentConfig(pad=2)
TRACKLETS_PER_ID = [1, 2, 3, 4, 2, 1, 3]  # 7 identities, 10 chunks of K = 2, P = 2 → 5 steps an epoch


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader")
    spec, tid = [], 7000
    for pid, count in enumerate(TRACKLETS_PER_ID, start=1):
        for j in range(count):
            tid += 1
            spec.append(dict(split="train", pid=pid, tid=tid, platform=("ground", "aerial")[j % 2],
                             frames=3 + (pid + j) % 5, capture=(60, 30, 20)))
    source = write_detreidx(base / "src", spec)
    assert shard_main([str(source), str(base / "shards"), "--shard-samples", "5", "--no-progress",
                       "--workers", "1"]) == 0
    return base / "shards" / "train"


def _loader(folder, seed=0, on_error="raise", prefetch=2) -> TrainLoader:
    index = ShardIndex.open(folder)
    sampler = PKSampler(index.labels_to_keys(), P, K, world_size=1, seed=seed)
    pipeline = FramePipeline(P * K, L, SIZE, AUGMENT, device_id=None, num_threads=1, seed=seed)
    return TrainLoader(index, sampler, pipeline, rank=0, num_frames=L, seed=seed, on_error=on_error,
                       prefetch=prefetch)


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("xfd-train-loader")]


def _break_frames(folder, key: str) -> None:
    """Overwrite the EOI marker of every frame of `key` in place (the tar stays valid, the JPEGs do not)."""
    for path in folder.glob("shard-*.tar"):
        with tarfile.open(path) as tar:
            spots = [info.offset_data + info.size - 2 for info in tar
                     if info.name.startswith(f"{key}.") and info.name.endswith(".jpg")]
        if spots:
            with open(path, "r+b") as handle:
                for spot in spots:
                    handle.seek(spot)
                    handle.write(b"\0\0")


def _planned_victim(folder) -> str:
    """A tracklet of epoch 0's plan (seed 0) whose identity has other tracklets to substitute."""
    sampler = _loader(folder).sampler
    keys = [key for step in sampler.epoch_plan(0) for key in step]
    return next(key for key in keys[P * K:]
                if any(len(group) > 1 and key in group for group in sampler.labels_to_keys.values()))


@pytest.fixture
def damaged_copy(train_set, tmp_path):
    return shutil.copytree(train_set, tmp_path / "train")


@pytest.fixture(scope="module")
def full_pass(train_set):
    loader = _loader(train_set, seed=4)
    return loader, list(loader.batches(epoch=1))


def test_shapes_dtypes_and_labels_match_the_metadata(full_pass):
    loader, batches = full_pass
    assert len(batches) == loader.steps_per_epoch() == 5
    index = loader.index
    for batch in batches:
        assert batch.frames.shape == (P * K, L, 3, 32, 16) and batch.frames.dtype == torch.float32
        for name in ("labels", "platform", "camids"):
            assert getattr(batch, name).shape == (P * K,) and getattr(batch, name).dtype == torch.long
        assert batch.meta.shape == (P * K, 3) and batch.meta.dtype == torch.long
        metas = [index.meta(key) for key in batch.keys]
        assert batch.labels.tolist() == [m["label"] for m in metas]
        assert batch.platform.tolist() == [int(m["platform"] == "aerial") for m in metas]
        assert batch.meta.tolist() == [[m["bins"]["altitude"], m["bins"]["distance"], m["bins"]["angle"]]
                                       for m in metas]
        assert batch.pids == [m["pid"] for m in metas] and batch.camids.tolist() == [m["camid"] for m in metas]
        assert batch.labels.view(P, K).eq(batch.labels.view(P, K)[:, :1]).all()  # K same-label in a row
    assert loader.waits == 5 and loader.wait_seconds > 0  # the first batch, at least, is always waited for


def test_two_loaders_give_identical_batches_and_epochs_differ(train_set, full_pass):
    _, expected = full_pass
    again = list(_loader(train_set, seed=4, prefetch=1).batches(epoch=1))
    for a, b in zip(expected, again, strict=True):
        assert a.keys == b.keys and torch.equal(a.frames, b.frames)
    other = next(iter(_loader(train_set, seed=4).batches(epoch=2)))
    assert other.keys != expected[0].keys or not torch.equal(other.frames, expected[0].frames)


def test_start_step_resumes_to_the_same_batches(train_set, full_pass):
    _, expected = full_pass
    resumed = list(_loader(train_set, seed=4).batches(epoch=1, start_step=2))
    assert len(resumed) == 3
    for a, b in zip(expected[2:], resumed):
        assert a.keys == b.keys and torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels)


def test_early_stop_leaves_no_live_thread(train_set):
    loader = _loader(train_set, prefetch=1)
    iterator = loader.batches(epoch=0)
    next(iterator)
    assert _loader_threads()
    iterator.close()
    assert not _loader_threads()
    for _ in itertools.islice(loader.batches(epoch=0), 1):  # the loader can run again after a break
        pass
    assert not _loader_threads()


def test_raise_policy_names_shard_key_and_frame(damaged_copy):
    victim = _planned_victim(damaged_copy)  # after the first step: the error comes from mid-epoch
    _break_frames(damaged_copy, victim)
    loader = _loader(damaged_copy)
    with pytest.raises(DataError) as caught:
        list(loader.batches(epoch=0))
    assert victim in caught.value.item and "frame" in caught.value.item and ".tar" in caught.value.item
    assert "EOI" in caught.value.rule
    assert not _loader_threads()


def test_skip_policy_substitutes_within_the_identity_and_counts(damaged_copy):
    victim = _planned_victim(damaged_copy)  # after the first step: the error comes from mid-epoch
    _break_frames(damaged_copy, victim)
    loader = _loader(damaged_copy, on_error="skip")
    planned = sum(step.count(victim) for step in loader.sampler.epoch_plan(0))
    batches = list(loader.batches(epoch=0))
    assert planned >= 1 and len(loader.skips.skipped) == planned
    assert all(victim in record["item"] for record in loader.skips.skipped)
    for batch in batches:
        assert victim not in batch.keys
        assert batch.labels.view(P, K).eq(batch.labels.view(P, K)[:, :1]).all()  # substitutes: same identity
    again = _loader(damaged_copy, on_error="skip")
    assert [b.keys for b in again.batches(epoch=0)] == [b.keys for b in batches]  # deterministic choice


def test_identity_without_a_good_tracklet_is_an_error_even_under_skip(damaged_copy):
    index = ShardIndex.open(damaged_copy)
    lonely = index.labels_to_keys()[0]  # identity with a single tracklet
    _break_frames(damaged_copy, lonely[0])
    with pytest.raises(DataError, match="no readable tracklet"):
        list(_loader(damaged_copy, on_error="skip").batches(epoch=0))
    assert not _loader_threads()


def test_mismatched_pipeline_is_refused(train_set):
    index = ShardIndex.open(train_set)
    sampler = PKSampler(index.labels_to_keys(), P, K)
    pipeline = FramePipeline(P * K + 1, L, SIZE, AUGMENT, num_threads=1)
    with pytest.raises(ValueError, match="P·K"):
        TrainLoader(index, sampler, pipeline, num_frames=L)


@pytest.mark.gpu
def test_gpu_batches_land_on_the_device(train_set):
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (bare GPU machine)")
    index = ShardIndex.open(train_set)
    sampler = PKSampler(index.labels_to_keys(), P, K, seed=1)
    pipeline = FramePipeline(P * K, L, SIZE, AUGMENT, device_id=0, num_threads=2, seed=1)
    loader = TrainLoader(index, sampler, pipeline, num_frames=L, seed=1, device=rank_device(0, cuda=True))
    batches = list(loader.batches(epoch=0))
    assert loader.producer_device == torch.device("cuda", 0)
    for batch in batches:
        assert batch.frames.device == batch.labels.device == torch.device("cuda", 0)
        assert batch.frames.shape == (P * K, L, 3, 32, 16)
    cpu = list(_loader(train_set, seed=1).batches(epoch=0))  # the same batches decoded on the CPU
    for gpu_batch, cpu_batch in zip(batches, cpu, strict=True):
        assert gpu_batch.keys == cpu_batch.keys and torch.equal(gpu_batch.labels.cpu(), cpu_batch.labels)
        # nvJPEG and libjpeg-turbo round differently; the augmentation and the frames chosen are the same
        assert (gpu_batch.frames.cpu() - cpu_batch.frames).abs().mean() < 0.05


# ---------------------------------------------------------------------- which device each rank's loader uses


def test_rank_device_is_the_node_local_gpu():
    assert [rank_device(local, cuda=True) for local in (0, 1, 7)] == [torch.device("cuda", i) for i in (0, 1, 7)]
    assert rank_device(3, cuda=False) == torch.device("cpu")
    with pytest.raises(ValueError, match="local rank"):
        rank_device(-1, cuda=True)


def test_cpu_loader_thread_records_its_device(train_set, full_pass):
    loader, _ = full_pass
    assert loader.device == loader.producer_device == torch.device("cpu")


class _DeviceProbe(Exception):
    """Raised by the probe in place of torch.cuda.set_device: stops the thread before any real CUDA call."""


@pytest.mark.parametrize("local_rank", [0, 1])
def test_each_local_rank_loader_thread_makes_its_gpu_current(train_set, monkeypatch, local_rank):
    """torch's current CUDA device is per thread and a new thread starts on GPU 0: the producer thread of local
    rank r must call torch.cuda.set_device(cuda:r) itself, first thing. No GPU here, so set_device is a probe that
    records the calling thread and stops it; the loader re-raises the probe in the consumer."""
    calls = []

    def probe(device):
        calls.append((threading.current_thread().name, torch.device(device)))
        raise _DeviceProbe

    monkeypatch.setattr(torch.cuda, "set_device", probe)
    index = ShardIndex.open(train_set)
    sampler = PKSampler(index.labels_to_keys(), P, K, world_size=2, seed=0)  # P·K / 2 tracklets a rank
    pipeline = FramePipeline(sampler.batch_size, L, SIZE, AUGMENT, device_id=None, num_threads=1)  # CPU decode
    loader = TrainLoader(index, sampler, pipeline, rank=local_rank, num_frames=L,
                         device=rank_device(local_rank, cuda=True))
    with pytest.raises(_DeviceProbe):
        next(iter(loader.batches(epoch=0)))
    assert calls == [(f"xfd-train-loader-rank{local_rank}", torch.device("cuda", local_rank))]
    assert threading.current_thread().name not in {name for name, _ in calls}  # not the consumer's thread
    assert not _loader_threads()


def test_loader_and_gpu_pipeline_must_agree_on_the_device(train_set):
    index = ShardIndex.open(train_set)
    sampler = PKSampler(index.labels_to_keys(), P, K)

    class GpuPipeline:  # the attributes TrainLoader reads of a pipeline that decodes on GPU 1 (none here)
        tracklets, frames, device = P * K, L, torch.device("cuda", 1)

    with pytest.raises(ValueError, match="decodes on cuda:1 but the loader was asked for cuda:0"):
        TrainLoader(index, sampler, GpuPipeline(), num_frames=L, device="cuda:0")
    assert TrainLoader(index, sampler, GpuPipeline(), num_frames=L, device="cuda").device == torch.device("cuda", 1)
