"""The DALI frame pipeline on CPU (device_id=None): shapes, clip-consistent augmentation, determinism, eval mode,
and the one DALI → torch conversion that the GPU path uses as well."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xfd.config import AugmentConfig
from xfd.data.pipeline import (CLIP_MEAN, CLIP_STD, FramePipeline, dali_to_torch, draw_clip_params,
                               pipeline_device)

from dataset_builders import jpeg_bytes

SIZE = (64, 32)
AUGMENT = AugmentConfig(pad=4)


def _smooth_jpeg(seed: int, height: int = 48, width: int = 24) -> bytes:
    """A JPEG with structure (gradients + blocks), so that flips and crops change it visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, rng.integers(0, 255))], -1)
    pixels[: height // 3, : width // 2] = rng.integers(0, 255, 3)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def train_pipe():
    return FramePipeline(tracklets=3, frames=4, image_size=SIZE, augment=AUGMENT, seed=11)


def test_output_shape_and_dtype(train_pipe):
    clips = [[_smooth_jpeg(b * 10 + f) for f in range(4)] for b in range(3)]
    out, _ = train_pipe.run(clips)
    assert out.shape == (3, 4, 3, 64, 32) and out.dtype == torch.float32


def test_every_frame_of_a_tracklet_gets_the_same_augmentation(train_pipe):
    same = _smooth_jpeg(1)
    out, params = train_pipe.run([[same] * 4 for _ in range(3)], step=5)
    for b in range(3):
        for f in range(1, 4):
            assert torch.equal(out[b, f], out[b, 0])  # identical frames stay identical: one draw per tracklet
    distinct = {tuple(np.concatenate([np.ravel(v[b]) for v in params.values()])) for b in range(3)}
    assert len(distinct) == 3  # ... while tracklets get different draws
    assert not torch.equal(out[0, 0], out[1, 0]) or not torch.equal(out[1, 0], out[2, 0])


def test_same_seed_epoch_step_repeats_and_other_steps_differ(train_pipe):
    clips = [[_smooth_jpeg(b * 10 + f) for f in range(4)] for b in range(3)]
    first, _ = train_pipe.run(clips, epoch=2, step=7)
    again, _ = train_pipe.run(clips, epoch=2, step=7)
    other, _ = train_pipe.run(clips, epoch=2, step=8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    fresh = FramePipeline(tracklets=3, frames=4, image_size=SIZE, augment=AUGMENT, seed=11)
    assert torch.equal(fresh.run(clips, epoch=2, step=7)[0], first)


def test_flip_draw_mirrors_the_frame(train_pipe):
    clips = [[_smooth_jpeg(3)] * 4 for _ in range(3)]
    identity = draw_clip_params(np.random.default_rng(0), 3, SIZE, None)
    flipped = dict(identity, flip=np.array([1, 0, 1], np.int32))
    plain, _ = train_pipe.run(clips, params=identity)
    mirrored, _ = train_pipe.run(clips, params=flipped)
    assert torch.allclose(mirrored[0], plain[0].flip(-1)) and torch.equal(mirrored[1], plain[1])


def test_eval_mode_is_resize_and_normalise_only():
    pipe = FramePipeline(tracklets=2, frames=2, image_size=SIZE, augment=None, seed=0)
    data = _smooth_jpeg(4, 64, 32)  # already at the output size: resizing is the identity
    out_a, params = pipe.run([[data] * 2] * 2, step=1)
    out_b, _ = pipe.run([[data] * 2] * 2, step=99)
    assert torch.equal(out_a, out_b)
    assert not params["flip"].any() and not params["erase_shape"].any() and not params["crop_anchor"].any()
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255.0  # (H, W, 3)
    expected = (decoded - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert np.abs(out_a[0, 0].permute(1, 2, 0).numpy() - expected).max() < 0.1  # decoder rounding only


def test_wrong_batch_shape_is_a_clear_error(train_pipe):
    with pytest.raises(ValueError, match="expected 3 tracklets × 4 frames"):
        train_pipe.run([[jpeg_bytes(0)] * 4] * 2)


# ---------------------------------------------------------------------- DALI output → torch: the one conversion


def _dali_batches(arrays_per_run: list[list[np.ndarray]]):
    """A minimal CPU DALI pipeline passing external arrays through; yields its TensorListCPU outputs."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(arrays_per_run[0]), num_threads=1, device_id=None, exec_dynamic=True,
                  prefetch_queue_depth=1)
    def passthrough():
        return fn.external_source(name="x", dtype=types.FLOAT)

    pipe = passthrough()
    pipe.build()
    for arrays in arrays_per_run:
        pipe.feed_input("x", arrays)
        (output,) = pipe.run()
        yield output


def test_dali_to_torch_copies_the_dense_batch_and_views_it():
    rng = np.random.default_rng(0)
    first = [rng.random((3, 4, 2), dtype=np.float32) for _ in range(6)]  # B·L = 2·3 samples of (3, H, W)
    out = dali_to_torch(next(_dali_batches([first])), (2, 3, 3, 4, 2), torch.device("cpu"))
    assert out.shape == (2, 3, 3, 4, 2) and out.dtype == torch.float32 and out.device.type == "cpu"
    np.testing.assert_array_equal(out.numpy(), np.stack(first).reshape(2, 3, 3, 4, 2))  # sample order kept


def test_dali_to_torch_refuses_ragged_batches_and_the_wrong_device():
    ragged = next(_dali_batches([[np.zeros((3, 4, 2), np.float32), np.zeros((3, 5, 2), np.float32)]]))
    with pytest.raises(ValueError, match="different shapes"):
        dali_to_torch(ragged, (2, 3, 4, 2), torch.device("cpu"))
    dense = next(_dali_batches([[np.zeros((3, 4, 2), np.float32)] * 2]))
    with pytest.raises(ValueError, match="on cpu, but it was asked for on cuda:1"):
        dali_to_torch(dense, (2, 3, 4, 2), torch.device("cuda", 1))  # refused before any CUDA call


def test_pipeline_device_follows_device_id():
    assert pipeline_device(None) == torch.device("cpu")
    assert pipeline_device(1) == torch.device("cuda", 1)
    assert FramePipeline(tracklets=1, frames=1, image_size=SIZE, num_threads=1).device == torch.device("cpu")
