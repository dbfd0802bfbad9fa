"""GPU checks (skipped without CUDA): device parity of the tiny model, and a ViT-L/14 bf16 training step with and
without activation checkpointing. Written for one H200; not run on the CPU-only development machines."""

import copy

import pytest
import torch

from xfd.config import load_config
from xfd.losses import cross_entropy_label_smooth, triplet_loss
from xfd.model import build_model, param_groups

pytestmark = pytest.mark.gpu


def _loss(out, labels):
    return sum(cross_entropy_label_smooth(l, labels) for l in out.logits) + triplet_loss(out.features[0], labels)


def test_tiny_model_matches_cpu_on_cuda(make_model, make_inputs):
    cpu = make_model().eval()
    gpu = copy.deepcopy(cpu).cuda().eval()
    x, platform, meta = make_inputs(batch=4, frames=5)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    expected = cpu.extract(x, platform, meta, flip_tta=True)
    got = gpu.extract(x.cuda(), platform.cuda(), meta.cuda(), flip_tta=True).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    gpu.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(x.cuda(), platform.cuda(), meta.cuda())
        loss = _loss(out, torch.tensor([0, 0, 1, 1], device="cuda"))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)


def test_vit_l14_bf16_step_with_and_without_activation_checkpointing():
    torch.manual_seed(0)
    cfg = load_config("xfd_vitl14.yaml", ["model.backbone.pretrained=null", "model.num_classes=16",
                                          "model.text.enabled=false"])
    model = build_model(cfg).cuda().train()
    x = torch.randn(4, 16, 3, 256, 128, device="cuda")
    platform = torch.tensor([0, 1, 0, 1], device="cuda")
    meta = torch.tensor([[18, 18, 3], [4, 4, 1], [18, 18, 3], [10, 11, 2]], device="cuda")
    labels = torch.tensor([0, 0, 1, 1], device="cuda")
    results = []
    for checkpointing in (False, True):
        model.encoder.grad_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = _loss(model(x, platform, meta), labels)
        loss.backward()
        grad = model.encoder.visual.transformer.resblocks[23].mlp.c_fc.weight.grad.float().clone()
        results.append((loss.item(), grad, torch.cuda.max_memory_allocated()))
    (loss_a, grad_a, mem_a), (loss_b, grad_b, mem_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-3)
    torch.testing.assert_close(grad_a, grad_b, rtol=5e-2, atol=1e-3)
    assert mem_b < mem_a
    optimiser = torch.optim.Adam(param_groups(model, base_lr=1e-4, weight_decay=2.5e-4), fused=True)
    before = model.encoder.visual.transformer.resblocks[23].mlp.c_fc.weight.detach().clone()
    optimiser.step()
    assert not torch.equal(model.encoder.visual.transformer.resblocks[23].mlp.c_fc.weight, before)
