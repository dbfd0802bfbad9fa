"""Model speed: training step (forward + backward + Adam) per tracklet, and the FLOPs behind it.

CPU (default): the tiny config (xfd/configs/tiny.yaml) on this machine. Prints time per tracklet, the FLOPs of a
training step as counted by torch's FLOP counter, the achieved FLOP/s, and that rate relative to this machine's
plain fp32 matmul rate measured in the same run (so the figure is comparable across machines).

    python bench/model.py [--batch 8 --frames 8 --steps 5]

GPU (`--gpu`): the paper's ViT-L/14 config (random weights) at 24 tracklets x 16 frames, bf16 autocast, with and
without activation checkpointing: tracklets/s, MFU against the bf16 matmul peak measured in the same run, and
peak memory. MFU uses model FLOPs (checkpointing's recomputation is not counted as useful work). The GPU machine
needs open_clip importable (a pure-Python wheel) besides torch.

    python bench/model.py --gpu [--gpu-batch 24 --gpu-frames 16 --gpu-steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from xfd.config import load_config
from xfd.losses import cross_entropy_label_smooth, i2tce_loss, triplet_loss
from xfd.model import build_model, param_groups
from xfd.model.summary import forward_flops, train_step_flops


def matmul_rate(device: str, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured FLOP/s of repeated n x n matmuls (the machine's practical peak for this dtype)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync()
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def make_batch(model, batch: int, frames: int, device: str):
    h, w = model.cfg.backbone.image_size
    x = torch.randn(batch, frames, 3, h, w, device=device)
    platform = (torch.arange(batch, device=device) % 2)
    meta = torch.zeros(batch, 3, dtype=torch.long, device=device)
    meta[platform == 0] = torch.tensor(model.table_sizes, device=device) - 1  # ground rows use the ground bin
    labels = torch.arange(batch, device=device) // 4 % model.cfg.num_classes  # PK batch, K = 4
    return x, platform, meta, labels


def stage2_loss(model, out, labels):
    """Stage-2 objective: 0.25 ID (both streams) + triplet + i2tce against the cached text features."""
    loss = 0.25 * sum(cross_entropy_label_smooth(l, labels) for l in out.logits)
    loss = loss + sum(triplet_loss(f, labels) for f in out.features)
    if model.text is not None:
        loss = loss + i2tce_loss(out.image_features, model.text.cached_features(), labels)
    return loss


def time_steps(model, optimiser, batch, steps: int, warmup: int, autocast_dtype=None, device="cpu") -> float:
    """Seconds per training step (forward, loss, backward, optimiser step)."""
    x, platform, meta, labels = batch
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(x, platform, meta)
            loss = stage2_loss(model, out, labels)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def bench_cpu(args) -> None:
    cfg = load_config(args.config, ["model.num_classes=16"])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.text.cache_features()
    model.train()
    optimiser = torch.optim.Adam(param_groups(model, base_lr=1e-4, weight_decay=1e-4))
    batch = make_batch(model, args.batch, args.frames, "cpu")
    step_s = time_steps(model, optimiser, batch, args.steps, args.warmup)
    model.eval()
    with torch.no_grad():
        model(*batch[:3])
        start = time.perf_counter()
        for _ in range(args.steps):
            model(*batch[:3])
        fwd_s = (time.perf_counter() - start) / args.steps
    step_flops = train_step_flops(model, args.frames)  # per tracklet, counted
    fwd_flops = forward_flops(model, args.frames)
    mm = matmul_rate("cpu", torch.float32, 1024)
    per_tracklet = step_s / args.batch
    achieved = step_flops / per_tracklet
    print(f"CPU bench: {cfg.model.backbone.name} at {cfg.model.backbone.image_size[0]}x"
          f"{cfg.model.backbone.image_size[1]}, batch {args.batch} x {args.frames} frames, "
          f"{torch.get_num_threads()} threads")
    print(f"  train step (fwd + bwd + Adam): {step_s * 1e3:.1f} ms/step, {per_tracklet * 1e3:.2f} ms/tracklet, "
          f"{1 / per_tracklet:.1f} tracklets/s")
    print(f"  forward only (eval):           {fwd_s / args.batch * 1e3:.2f} ms/tracklet")
    print(f"  counted FLOPs per tracklet:    forward {fwd_flops / 1e9:.3f} GFLOP, train step "
          f"{step_flops / 1e9:.3f} GFLOP")
    print(f"  achieved {achieved / 1e9:.2f} GFLOP/s in training vs {mm / 1e9:.1f} GFLOP/s fp32 matmul "
          f"(1024^3) on this machine: ratio {achieved / mm:.3f}")


def gpu_step(checkpointing: bool, batch: int, frames: int, steps: int, peak: float) -> dict:
    """One ViT-L/14 configuration (random weights, stage-2 layout, bf16 autocast, fused Adam): step time,
    tracklets/s, model FLOPs per tracklet, MFU against `peak` FLOP/s, peak memory. Out of memory is a result."""
    cfg = load_config("xfd_vitl14.yaml", ["model.backbone.pretrained=null", "model.num_classes=300",
                                          f"model.backbone.grad_checkpointing={str(checkpointing).lower()}"])
    result = {"checkpointing": checkpointing, "batch": batch, "frames": frames,
              "image_size": list(cfg.model.backbone.image_size), "precision": "bf16 autocast"}
    model = optimiser = None
    try:
        torch.manual_seed(0)
        model = build_model(cfg).cuda()
        model.text.cache_features()
        model.train()
        optimiser = torch.optim.Adam(param_groups(model, base_lr=1e-4, weight_decay=2.5e-4), fused=True)
        inputs = make_batch(model, batch, frames, "cuda")
        torch.cuda.reset_peak_memory_stats()
        step_s = time_steps(model, optimiser, inputs, steps, 3, torch.bfloat16, "cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            flops = train_step_flops(model, frames)  # model FLOPs per tracklet (no recomputation)
        rate = batch / step_s
        result.update(status="ok", step_ms=step_s * 1e3, tracklets_per_s=rate, tflop_per_tracklet=flops / 1e12,
                      mfu=flops * rate / peak, peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
    except torch.cuda.OutOfMemoryError as error:
        result.update(status="out of memory", error=str(error).splitlines()[0],
                      peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
    finally:
        del model, optimiser
        torch.cuda.empty_cache()
    return result


def measure_gpu(batch: int = 24, frames: int = 16, steps: int = 10) -> dict:
    """The bf16 matmul peak measured now, then the step with and without activation checkpointing."""
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device on this machine")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_rate("cuda", torch.bfloat16, 8192, seconds=2.0)
    return {"device": torch.cuda.get_device_name(), "matmul_peak_tflops": peak / 1e12,
            "runs": [gpu_step(checkpointing, batch, frames, steps, peak) for checkpointing in (False, True)]}


def bench_gpu(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device on this machine")
    results = measure_gpu(args.gpu_batch, args.gpu_frames, args.gpu_steps)
    print(f"GPU bench on {results['device']}: measured bf16 matmul peak {results['matmul_peak_tflops']:.0f} TFLOP/s")
    for run in results["runs"]:
        head = f"  ViT-L/14 {run['batch']} x {run['frames']} frames, checkpointing={run['checkpointing']}: "
        if run["status"] != "ok":
            print(head + f"{run['status']} ({run['error']})")
            continue
        print(head + f"{run['step_ms']:.0f} ms/step, {run['tracklets_per_s']:.1f} tracklets/s, "
              f"{run['tflop_per_tracklet']:.2f} TFLOP/tracklet, MFU {run['mfu']:.1%} (goal >= 45%), "
              f"peak memory {run['peak_memory_gib']:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="run the ViT-L/14 GPU benchmark instead")
    parser.add_argument("--gpu-batch", type=int, default=24)
    parser.add_argument("--gpu-frames", type=int, default=16)
    parser.add_argument("--gpu-steps", type=int, default=10)
    args = parser.parse_args()
    bench_gpu(args) if args.gpu else bench_cpu(args)


if __name__ == "__main__":
    main()
