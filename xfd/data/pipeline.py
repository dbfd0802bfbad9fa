"""The DALI frame pipeline: a flat batch of B·L encoded JPEGs in, a (B, L, 3, H, W) float tensor out.

The Python side streams tracklets and samples L frames; DALI decodes (`mixed` on a GPU, `cpu` with `device_id=None`
elsewhere — the same graph) and augments (docs/design.md: DALI via external_source). Augmentation is
clip-consistent: one draw per tracklet (flip, pad-and-crop offset, random-erasing box, colour jitter), repeated for
each of its L frames and handed to DALI as per-sample argument inputs, so every frame of a tracklet gets the same
transform. Draws come from a numpy Generator seeded by (seed, epoch, step), so a run repeats exactly. Without
augmentation settings (evaluation) the pipeline draws nothing: resize and normalise only.

DALI's output becomes a torch tensor in one function, `dali_to_torch`, for both devices: a tensor of DALI's dense
(B·L, 3, H, W) shape is allocated on the pipeline's device (CPU, or the GPU `device_id` names), DALI copies into it
(on the GPU: on torch's current stream, ordered after DALI's own work), and it is viewed as (B, L, 3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch

from xfd.config import AugmentConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# Random erasing's box (Zhong et al.'s defaults, as the reference ReID recipes use them): area fraction and aspect.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 3.3)


def draw_clip_params(rng: np.random.Generator, tracklets: int, image_size: tuple[int, int],
                     augment: AugmentConfig | None) -> dict:
    """One augmentation draw per tracklet: arrays with a leading (B,) axis; `augment` None draws the identity."""
    b = tracklets
    if augment is None:
        return {
            "flip": np.zeros(b, np.int32),
            "crop_anchor": np.zeros((b, 2), np.float32),
            "erase_anchor": np.zeros((b, 2), np.float32),
            "erase_shape": np.zeros((b, 2), np.float32),
            "brightness": np.ones(b, np.float32), "contrast": np.ones(b, np.float32),
            "saturation": np.ones(b, np.float32), "hue": np.zeros(b, np.float32),
        }
    (h, w), pad = image_size, augment.pad
    area = rng.uniform(*ERASE_AREA, b) * h * w
    aspect = np.exp(rng.uniform(*np.log(ERASE_ASPECT), b))
    erase_h = np.minimum(np.round(np.sqrt(area * aspect)), h)
    erase_w = np.minimum(np.round(np.sqrt(area / aspect)), w)
    erase_on = rng.random(b) < augment.erase_p
    return {
        "flip": (rng.random(b) < augment.flip_p).astype(np.int32),
        # offset of the crop window inside the image padded by `pad` on every side, in image coordinates
        "crop_anchor": rng.integers(-pad, pad + 1, (b, 2)).astype(np.float32),
        "erase_anchor": np.stack([rng.uniform(0, h - erase_h), rng.uniform(0, w - erase_w)], 1).astype(np.float32),
        "erase_shape": (np.stack([erase_h, erase_w], 1) * erase_on[:, None]).astype(np.float32),
        "brightness": rng.uniform(1 - augment.brightness, 1 + augment.brightness, b).astype(np.float32),
        "contrast": rng.uniform(1 - augment.contrast, 1 + augment.contrast, b).astype(np.float32),
        "saturation": rng.uniform(1 - augment.saturation, 1 + augment.saturation, b).astype(np.float32),
        "hue": (rng.uniform(-augment.hue, augment.hue, b) * 360.0).astype(np.float32),  # DALI takes degrees
    }


def _per_frame(values: np.ndarray, frames: int) -> list[np.ndarray]:
    """(B, ...) per-tracklet values → B·L per-frame samples, each tracklet's value repeated L times."""
    return list(np.repeat(values, frames, axis=0))


def pipeline_device(device_id: int | None) -> torch.device:
    """Where a pipeline's output lives: the CPU for `device_id=None`, else that GPU."""
    return torch.device("cpu") if device_id is None else torch.device("cuda", device_id)


def dali_to_torch(output, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """DALI's output batch (a TensorList of equal-shape samples) as a torch tensor of `shape` on `device`.

    The same code for both devices: a tensor of DALI's dense (N, ...) shape is allocated on `device` and DALI's
    plugin copies into it (`feed_ndarray`: a host copy for a TensorListCPU; for a TensorListGPU an asynchronous copy
    on torch's current stream of `device`, which DALI first makes wait for its own work on the batch), then it is
    viewed as `shape`. The tensor's memory is torch's own (the CUDA caching allocator's on a GPU), so the loader's
    stream bookkeeping covers it; the copy costs one pass over the batch."""
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type
    from nvidia.dali.tensors import TensorGPU

    if not output.is_dense_tensor():
        raise ValueError(f"DALI returned samples of different shapes {sorted(set(map(tuple, output.shape())))}; "
                         f"expected a dense batch viewable as {tuple(shape)}")
    dense = output.as_tensor()  # a view of the batch: (N, 3, H, W)
    on_gpu = isinstance(dense, TensorGPU)
    where = torch.device("cuda", dense.device_id()) if on_gpu else torch.device("cpu")
    if where != torch.device(device):
        raise ValueError(f"DALI's output is on {where}, but it was asked for on {device}")
    flat = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=where)  # (N, 3, H, W)
    feed_ndarray(dense, flat, cuda_stream=torch.cuda.current_stream(where) if on_gpu else None)
    return flat.view(shape)


class FramePipeline:
    """Decode + augment fixed-size batches of B tracklets × L frames with DALI.

    `augment` None (evaluation) resizes and normalises only. `device_id` None decodes on the CPU; a GPU index
    decodes there (`mixed`) and returns tensors on that GPU."""

    def __init__(self, tracklets: int, frames: int, image_size: tuple[int, int],
                 augment: AugmentConfig | None = None, device_id: int | None = None, num_threads: int = 2,
                 seed: int = 0):
        self.tracklets, self.frames, self.augment = tracklets, frames, augment
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = seed
        self.device = pipeline_device(device_id)
        self._pipe = self._build(tracklets * frames, device_id, num_threads, seed)

    def _build(self, batch_size: int, device_id: int | None, num_threads: int, seed: int):
        from nvidia.dali import fn, pipeline_def, types

        height, width = self.image_size

        @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                      exec_dynamic=True, prefetch_queue_depth=1)  # fed one batch at a time
        def graph():
            # augmentation parameters stay CPU argument inputs; the images move to the GPU at decode ("mixed")
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            images = fn.decoders.image(jpegs, device="mixed" if device_id is not None else "cpu",
                                       output_type=types.RGB)
            images = fn.resize(images, resize_x=width, resize_y=height)
            images = fn.slice(images, fn.external_source(name="crop_anchor", dtype=types.FLOAT, ndim=1),
                              np.array([height, width], np.float32), axis_names="HW",
                              normalized_anchor=False, normalized_shape=False, out_of_bounds_policy="pad",
                              fill_values=0)
            images = fn.color_twist(images,
                                    brightness=fn.external_source(name="brightness", dtype=types.FLOAT, ndim=0),
                                    contrast=fn.external_source(name="contrast", dtype=types.FLOAT, ndim=0),
                                    saturation=fn.external_source(name="saturation", dtype=types.FLOAT, ndim=0),
                                    hue=fn.external_source(name="hue", dtype=types.FLOAT, ndim=0))
            images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                              mean=[m * 255 for m in CLIP_MEAN], std=[v * 255 for v in CLIP_STD],
                                              mirror=fn.external_source(name="flip", dtype=types.INT32, ndim=0))
            # erasing after normalisation fills with 0 = the dataset mean
            return fn.erase(images, anchor=fn.external_source(name="erase_anchor", dtype=types.FLOAT, ndim=1),
                            shape=fn.external_source(name="erase_shape", dtype=types.FLOAT, ndim=1),
                            axis_names="HW", fill_value=0)

        pipe = graph()
        pipe.build()
        return pipe

    def params_for(self, epoch: int, step: int) -> dict:
        """The augmentation draws of one batch; a pure function of (seed, epoch, step)."""
        rng = np.random.default_rng([self.seed, epoch, step])
        return draw_clip_params(rng, self.tracklets, self.image_size, self.augment)

    def run(self, frames: list[list[bytes]], epoch: int = 0, step: int = 0,
            params: dict | None = None) -> tuple[torch.Tensor, dict]:
        """frames: B lists of L encoded JPEGs → ((B, L, 3, H, W) float32 tensor on `self.device`, the draws used).

        `params` overrides the seeded draws (same keys and shapes as `draw_clip_params`). On a GPU the tensor is
        ready in the order of torch's current stream (see `dali_to_torch`).
        """
        if len(frames) != self.tracklets or any(len(clip) != self.frames for clip in frames):
            raise ValueError(f"expected {self.tracklets} tracklets × {self.frames} frames, got "
                             f"{len(frames)} × {sorted({len(clip) for clip in frames})}")
        params = self.params_for(epoch, step) if params is None else params
        self._pipe.feed_input("jpegs", [np.frombuffer(data, np.uint8) for clip in frames for data in clip])
        for name, values in params.items():
            self._pipe.feed_input(name, _per_frame(values, self.frames))
        (output,) = self._pipe.run()
        shape = (self.tracklets, self.frames, 3, *self.image_size)
        return dali_to_torch(output, shape, self.device), params  # (B, L, 3, H, W)
