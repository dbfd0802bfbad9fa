"""Selective fine-tuning: after one optimiser step exactly the intended parameters moved, at their group's LR."""

import pytest
import torch

from xfd.config import ConfigError
from xfd.model import param_groups
from xfd.losses import cross_entropy_label_smooth, triplet_loss

BASE_LR = 0.5


def _loss(model, x, platform, meta, labels):
    out = model(x, platform, meta)
    return sum(cross_entropy_label_smooth(l, labels) for l in out.logits) + triplet_loss(out.features[0], labels)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_sgd_step_moves_exactly_the_selected_parameters_at_their_group_lr(make_model, make_inputs):
    model = make_model("finetune.backbone_lr_scale=0.1")  # freeze backbone except blocks 2, 3; lr scale 0.1
    model.train()
    x, platform, meta = make_inputs(batch=4, frames=2)
    labels = torch.tensor([0, 0, 1, 1])
    groups = param_groups(model, base_lr=BASE_LR, weight_decay=0.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    optimiser = torch.optim.SGD(groups, lr=BASE_LR)
    before = _snapshot(model)
    _loss(model, x, platform, meta, labels).backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    optimiser.step()

    moved_blocks = set()
    for name, param in model.named_parameters():
        delta = param.detach() - before[name]
        if not param.requires_grad:
            assert grads[name] is None and torch.count_nonzero(delta) == 0, name
            continue
        lr = lr_of[id(param)]
        expected_lr = BASE_LR * 0.1 if name.startswith("encoder.visual.") else BASE_LR
        assert lr == pytest.approx(expected_lr), name
        torch.testing.assert_close(delta, -lr * grads[name], rtol=1e-5, atol=1e-7, msg=name)
        if name.startswith("encoder.visual.transformer.resblocks.") and torch.count_nonzero(delta):
            moved_blocks.add(int(name.split(".")[4]))
    assert moved_blocks == {2, 3}  # the selected blocks really train (the authors' stage-2 optimiser re-froze them)
    frozen_backbone = [n for n, p in model.named_parameters() if n.startswith("encoder.visual.") and not p.requires_grad]
    assert any(".resblocks.0." in n for n in frozen_backbone) and any("conv1" in n for n in frozen_backbone)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("text."))


def test_adam_step_size_reflects_the_backbone_lr_scale(make_model, make_inputs):
    model = make_model("finetune.backbone_lr_scale=0.25", "head.neck=none")
    model.train()
    x, platform, meta = make_inputs(batch=4, frames=2)
    optimiser = torch.optim.Adam(param_groups(model, base_lr=1e-2, weight_decay=0.0))
    before = _snapshot(model)
    _loss(model, x, platform, meta, torch.tensor([0, 0, 1, 1])).backward()
    optimiser.step()
    # Adam's first step moves every coordinate with a clear gradient by ~lr
    block = "encoder.visual.transformer.resblocks.3.mlp.c_fc.weight"
    head = "classifier_cls.weight"
    params = dict(model.named_parameters())
    assert (params[block] - before[block]).abs().max().item() == pytest.approx(1e-2 * 0.25, rel=1e-3)
    assert (params[head] - before[head]).abs().max().item() == pytest.approx(1e-2, rel=1e-3)
    frozen = "encoder.visual.transformer.resblocks.1.mlp.c_fc.weight"
    assert torch.equal(params[frozen], before[frozen])


def test_groups_cover_each_trainable_parameter_once_with_decay_rules(make_model):
    model = make_model("head.neck=instancenorm", "finetune.backbone_lr_scale=0.1")  # the ViT-L/14 recipe's
    groups = param_groups(model, base_lr=1e-4, weight_decay=2.5e-4, no_decay_weight_decay=1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    by_group = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert [g["name"] for g in groups] == ["backbone/decay", "backbone/no_decay", "new/decay", "new/no_decay"]
    assert "encoder.visual.transformer.resblocks.3.attn.in_proj_weight" in by_group["backbone/decay"]
    assert "encoder.visual.transformer.resblocks.3.attn.in_proj_bias" in by_group["backbone/no_decay"]
    assert "encoder.visual.transformer.resblocks.2.ln_1.weight" in by_group["backbone/no_decay"]
    for no_decay in ("encoder.prompts.tokens", "encoder.meta_cls.altitude.weight", "pool_cls.kappa_distance.weight",
                     "encoder.ifa.0.down.bias", "neck_cls.weight"):
        assert no_decay in by_group["new/no_decay"], no_decay
    assert {"encoder.ifa.0.down.weight", "classifier_cls.weight", "pool_cls.score.weight"} <= by_group["new/decay"]
    wd = {g["name"]: g["weight_decay"] for g in groups}
    assert wd == {"backbone/decay": 2.5e-4, "backbone/no_decay": 1e-5, "new/decay": 2.5e-4, "new/no_decay": 1e-5}
    assert {g["name"]: g["lr_scale"] for g in groups}["backbone/decay"] == 0.1


def test_full_fine_tuning_and_post_layers(make_model):
    model = make_model("finetune.freeze_backbone=false")
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder.visual."))
    model = make_model("finetune.train_post=true", "finetune.trainable_blocks=[]")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.visual.")}
    assert trainable == {"encoder.visual.ln_post.weight", "encoder.visual.ln_post.bias", "encoder.visual.proj"}


def test_stage_one_groups_hold_only_the_text_tokens(make_model):
    model = make_model()
    model.set_stage(1)
    groups = param_groups(model, base_lr=3.5e-4, weight_decay=1e-4)
    assert len(groups) == 1 and groups[0]["name"] == "new/no_decay" and groups[0]["lr"] == 3.5e-4
    assert groups[0]["params"][0] is model.text.prompt_learner.ctx


def test_bad_block_indices_and_frozen_models_are_errors(make_model):
    with pytest.raises(ConfigError, match="model.finetune.trainable_blocks: block index 4 out of range"):
        make_model("finetune.trainable_blocks=[3, 4]")
    model = make_model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, base_lr=1e-4, weight_decay=0.0)


@pytest.mark.slow  # several training steps
def test_a_few_stage_two_steps_fit_one_pk_batch(make_model, make_inputs):
    """Model, losses and groups together learn: repeated Adam steps on one batch lower the stage-2 loss."""
    from xfd.losses import i2tce_loss

    model = make_model()
    model.text.cache_features()
    model.train()
    x, platform, meta = make_inputs(batch=4, frames=2)
    labels = torch.tensor([0, 0, 1, 1])
    optimiser = torch.optim.Adam(param_groups(model, base_lr=1e-3, weight_decay=1e-4))
    losses = []
    for _ in range(8):
        out = model(x, platform, meta)
        loss = 0.25 * sum(cross_entropy_label_smooth(l, labels) for l in out.logits) \
            + triplet_loss(out.features[0], labels) + i2tce_loss(out.image_features, model.text.cached_features(),
                                                                 labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
