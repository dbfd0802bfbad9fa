"""BatchNorm statistics across ranks: after `average_batch_norm_statistics` two gloo ranks that saw different
batches hold the same running mean and variance, the mean of what each rank had, and nothing else changes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from xfd.engine.steps import average_batch_norm_statistics

_RANK_SCRIPT = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_batchnorm_ranks import trained_on_rank
    from xfd.engine.steps import average_batch_norm_statistics
    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    module = trained_on_rank(rank)
    average_batch_norm_statistics(module, 2)
    torch.save(module.state_dict(), out)
    dist.destroy_process_group()
""").format(tests=os.path.dirname(__file__))


def trained_on_rank(rank: int) -> torch.nn.Module:
    """The same initial module on every rank, then three training-mode forwards of rank-specific batches."""
    torch.manual_seed(0)
    module = torch.nn.ModuleDict({"linear": torch.nn.Linear(4, 6), "bn1d": torch.nn.BatchNorm1d(6),
                                  "bn2d": torch.nn.BatchNorm2d(3)}).train()
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        x = torch.randn(8, 4, generator=generator) * (1 + rank)  # (B, 4): ranks see other scales and shifts
        module["bn1d"](module["linear"](x) + rank)
        module["bn2d"](torch.randn(8, 3, 5, 5, generator=generator) - 2 * rank)  # (B, 3, H, W)
    return module


@pytest.mark.slow  # two gloo processes
def test_two_gloo_ranks_end_with_the_mean_of_their_statistics(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(rank), init, str(tmp_path / f"rank{rank}.pt")],
                              env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(errors)
    got = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    own = [trained_on_rank(rank).state_dict() for rank in range(2)]
    for name in own[0]:
        if name.endswith(("running_mean", "running_var")):
            assert not torch.allclose(own[0][name], own[1][name]), f"{name}: the ranks' batches should differ"
            torch.testing.assert_close(got[0][name], (own[0][name] + own[1][name]) / 2, msg=name)
            assert torch.equal(got[0][name], got[1][name]), name
        else:  # weights, biases and num_batches_tracked are left as they were
            for rank in range(2):
                assert torch.equal(got[rank][name], own[rank][name]), (rank, name)


def test_a_world_of_one_is_left_alone():
    module = trained_on_rank(1)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    average_batch_norm_statistics(module, 1)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
