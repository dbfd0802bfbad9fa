"""The re-ranking memory planner: predictions grow with the algorithm's arrays, and a run that will not fit is
refused before any work, with the numbers and the settings that would fit."""

import numpy as np
import pytest

from xfd.eval.rerank import k_reciprocal_stream
from xfd.eval.rerank_memory import plan, refuse_unless_it_fits

GIB = 2**30


def test_prediction_grows_with_the_problem_and_shrinks_with_float32():
    small = plan(2_000, 18_000, 1024, 28, 6, np.float32, resident=0)
    large = plan(10_000, 190_000, 1024, 28, 6, np.float32, resident=0)
    assert large.host_bytes > 4 * small.host_bytes
    assert plan(2_000, 18_000, 1024, 28, 6, np.float64, resident=0).host_bytes > small.host_bytes
    # the features concatenated and the blend's scaled query copy; the caller's arrays are part of the resident set
    assert large.parts["features"] == (200_000 + 10_000) * 1024 * 4
    assert plan(10, 90, 8, 5, 3, np.float32).parts["resident"] > 50 << 20  # this process, measured


def test_refusal_names_the_numbers_and_a_setting_that_fits():
    memory = plan(10_000, 190_000, 1024, 28, 6, np.float64, workers=2, resident=1 << 30)
    single = plan(10_000, 190_000, 1024, 28, 6, np.float32, workers=2, resident=1 << 30)
    with pytest.raises(ValueError) as refused:
        refuse_unless_it_fits(memory, (memory.added_bytes + single.added_bytes) // 2)
    message = str(refused.value)
    assert "will not fit in memory" in message and "q=10000, g=190000, d=1024, 64-bit" in message
    assert f"needs {memory.added_bytes / GIB:.2f} GiB more" in message
    assert f"predicted peak per rank {memory.host_bytes / GIB:.2f} GiB" in message
    assert "would fit: float32 features" in message  # float32 halves the features
    refuse_unless_it_fits(memory, memory.added_bytes)  # exactly enough is accepted


def test_stream_refuses_before_any_work(make_features):
    x = make_features(300, 16, 10, np.float32, seed=1)
    with pytest.raises(ValueError, match="will not fit in memory"):
        k_reciprocal_stream(x[:30], x[30:], 20, 6, 0.3, device="cpu", memory_limit=1 << 20)


def test_gpu_plan_is_checked_against_the_device():
    memory = plan(10_000, 1_000_000, 1024, 28, 6, np.float32, device="cuda", graph_block=16384)
    assert memory.device_bytes > 4 * 1_010_000 * 1024  # the features alone
    with pytest.raises(ValueError, match="will not fit in GPU memory"):
        refuse_unless_it_fits(memory, 1 << 40, device_limit=memory.device_bytes - 1)
    refuse_unless_it_fits(memory, 1 << 40, device_limit=memory.device_bytes)
