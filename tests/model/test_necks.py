"""xfd.model.necks: BNNeck keeps its bias frozen; the InstanceNorm neck normalises each vector on its own."""

import torch
from torch import nn

from xfd.model.necks import BNNeck, InstanceNormNeck, build_neck


def test_bnneck_bias_is_frozen_in_every_stage(make_model):
    model = make_model("head.neck=bnneck")
    for stage in (2, 1, 2):
        model.set_stage(stage)
        assert not model.neck_cls.bn.bias.requires_grad and not model.neck_proj.bn.bias.requires_grad
    assert model.neck_cls.bn.weight.requires_grad
    assert torch.count_nonzero(model.neck_cls.bn.bias) == 0


def test_instance_norm_neck_uses_per_vector_statistics():
    neck = InstanceNormNeck(6)
    with torch.no_grad():
        neck.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(4, 6) * 3 + 2
    y = neck(x)
    expected = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(y, expected * neck.weight)
    # independent of the batch: the first row alone gives the same result
    torch.testing.assert_close(neck(x[:1]), y[:1])
    neck.eval()
    torch.testing.assert_close(neck(x), y)


def test_build_neck():
    assert isinstance(build_neck("bnneck", 4), BNNeck)
    assert isinstance(build_neck("instancenorm", 4), InstanceNormNeck)
    assert isinstance(build_neck("none", 4), nn.Identity)


def test_batchnorm_neck_computes_and_keeps_statistics_in_float32_under_bf16_weights():
    from xfd.model.necks import Float32BatchNorm1d

    torch.manual_seed(0)
    reference, ours = nn.BatchNorm1d(6), Float32BatchNorm1d(6)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(8, 6) * 3 + 1  # (B, C)
    torch.testing.assert_close(ours(x), reference(x))  # training mode: batch statistics, running update
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    assert int(ours.num_batches_tracked) == 1
    ours.bfloat16()  # what a bf16 engine does to a module
    assert ours.weight.dtype == torch.bfloat16
    assert ours.running_mean.dtype == ours.running_var.dtype == torch.float32
    out = ours(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(x.bfloat16().float()))  # bf16 weights of 1 and 0 are exact
    torch.testing.assert_close(ours.running_var, reference.running_var)  # updated in float32
    ours.eval()
    torch.testing.assert_close(ours(x), reference.eval()(x))


def test_id_classifier_runs_in_the_dtype_of_its_input():
    from xfd.model.necks import classifier

    layer = classifier(4, 3).bfloat16()
    x = torch.randn(2, 4)
    out = layer(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x @ layer.weight.float().T)
