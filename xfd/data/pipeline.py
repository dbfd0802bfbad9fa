"""The DALI frame pipeline: a flat batch of B·L encoded JPEGs in, a (B, L, 3, H, W) float tensor out.

docs/design.md, decision 2: the Python side streams tracklets and samples L frames; DALI decodes (`mixed` on a
GPU, `cpu` with `device_id=None` elsewhere — the same graph) and augments. Augmentation is clip-consistent:
one draw per tracklet (flip, pad-and-crop offset, random-erasing box, colour jitter), repeated for each of its L
frames and handed to DALI as per-sample argument inputs, so every frame of a tracklet gets the same transform.
Draws come from a numpy Generator seeded by (seed, epoch, step), so a run repeats exactly. Evaluation mode
draws nothing: resize and normalise only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class AugmentSettings:
    """docs/model.md: resize 256×128, flip p .5, pad 10 + random crop, random erasing p .5, jitter .1/.1/.1/.05."""

    height: int = 256
    width: int = 128
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: tuple[float, float] = (0.3, 3.3)
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.05  # fraction of a full turn, as torchvision's ColorJitter


def draw_clip_params(rng: np.random.Generator, tracklets: int, settings: AugmentSettings, train: bool) -> dict:
    """One augmentation draw per tracklet: arrays with a leading (B,) axis."""
    b = tracklets
    if not train:
        return {
            "flip": np.zeros(b, np.int32),
            "crop_anchor": np.zeros((b, 2), np.float32),
            "erase_anchor": np.zeros((b, 2), np.float32),
            "erase_shape": np.zeros((b, 2), np.float32),
            "brightness": np.ones(b, np.float32), "contrast": np.ones(b, np.float32),
            "saturation": np.ones(b, np.float32), "hue": np.zeros(b, np.float32),
        }
    h, w, pad = settings.height, settings.width, settings.pad
    area = rng.uniform(*settings.erase_area, b) * h * w
    aspect = np.exp(rng.uniform(*np.log(settings.erase_aspect), b))
    erase_h = np.minimum(np.round(np.sqrt(area * aspect)), h)
    erase_w = np.minimum(np.round(np.sqrt(area / aspect)), w)
    erase_on = rng.random(b) < settings.erase_p
    return {
        "flip": (rng.random(b) < settings.flip_p).astype(np.int32),
        # offset of the crop window inside the image padded by `pad` on every side, in image coordinates
        "crop_anchor": rng.integers(-pad, pad + 1, (b, 2)).astype(np.float32),
        "erase_anchor": np.stack([rng.uniform(0, h - erase_h), rng.uniform(0, w - erase_w)], 1).astype(np.float32),
        "erase_shape": (np.stack([erase_h, erase_w], 1) * erase_on[:, None]).astype(np.float32),
        "brightness": rng.uniform(1 - settings.brightness, 1 + settings.brightness, b).astype(np.float32),
        "contrast": rng.uniform(1 - settings.contrast, 1 + settings.contrast, b).astype(np.float32),
        "saturation": rng.uniform(1 - settings.saturation, 1 + settings.saturation, b).astype(np.float32),
        "hue": (rng.uniform(-settings.hue, settings.hue, b) * 360.0).astype(np.float32),  # DALI takes degrees
    }


def _per_frame(values: np.ndarray, frames: int) -> list[np.ndarray]:
    """(B, ...) per-tracklet values → B·L per-frame samples, each tracklet's value repeated L times."""
    return list(np.repeat(values, frames, axis=0))


class FramePipeline:
    """Decode + augment fixed-size batches of B tracklets × L frames with DALI."""

    def __init__(self, tracklets: int, frames: int, settings: AugmentSettings = AugmentSettings(),
                 train: bool = True, device_id: int | None = None, num_threads: int = 2, seed: int = 0):
        self.tracklets, self.frames, self.settings, self.train = tracklets, frames, settings, train
        self.seed = seed
        self.device = "cpu" if device_id is None else "gpu"
        self._pipe = self._build(tracklets * frames, device_id, num_threads, seed)

    def _build(self, batch_size: int, device_id: int | None, num_threads: int, seed: int):
        from nvidia.dali import fn, pipeline_def, types

        s = self.settings

        @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                      exec_dynamic=True, prefetch_queue_depth=1)  # fed one batch at a time
        def graph():
            # augmentation parameters stay CPU argument inputs; the images move to the GPU at decode ("mixed")
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            images = fn.decoders.image(jpegs, device="mixed" if device_id is not None else "cpu",
                                       output_type=types.RGB)
            images = fn.resize(images, resize_x=s.width, resize_y=s.height)
            images = fn.slice(images, fn.external_source(name="crop_anchor", dtype=types.FLOAT, ndim=1),
                              np.array([s.height, s.width], np.float32), axis_names="HW",
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
        return draw_clip_params(rng, self.tracklets, self.settings, self.train)

    def run(self, frames: list[list[bytes]], epoch: int = 0, step: int = 0,
            params: dict | None = None) -> tuple[torch.Tensor, dict]:
        """frames: B lists of L encoded JPEGs → ((B, L, 3, H, W) float32 tensor, the draws used).

        `params` overrides the seeded draws (same keys and shapes as `draw_clip_params`).
        """
        if len(frames) != self.tracklets or any(len(clip) != self.frames for clip in frames):
            raise ValueError(f"expected {self.tracklets} tracklets × {self.frames} frames, got "
                             f"{len(frames)} × {sorted({len(clip) for clip in frames})}")
        params = self.params_for(epoch, step) if params is None else params
        self._pipe.feed_input("jpegs", [np.frombuffer(data, np.uint8) for clip in frames for data in clip])
        for name, values in params.items():
            self._pipe.feed_input(name, _per_frame(values, self.frames))
        (output,) = self._pipe.run()
        shape = (self.tracklets, self.frames, 3, self.settings.height, self.settings.width)
        if self.device == "gpu":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = torch.empty(shape, dtype=torch.float32, device="cuda")
            feed_ndarray(output.as_tensor(), dense, cuda_stream=torch.cuda.current_stream())
            return dense, params
        return torch.from_numpy(np.array(output.as_tensor())).view(shape), params  # (B, L, 3, H, W)
