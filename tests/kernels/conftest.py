"""Fixtures of the kernel tests: which CPU kernels run (the C kernels of kernels/cpu_kernels.c or the NumPy twins)."""

import pytest

from xfd.kernels import cpu_source


def _use(monkeypatch, which: str) -> None:
    if which == "numpy":
        monkeypatch.setenv(cpu_source.CHOICE_VARIABLE, "numpy")
    else:
        monkeypatch.delenv(cpu_source.CHOICE_VARIABLE, raising=False)
    cpu_source.cpu_library.cache_clear()
    if which == "c":
        assert cpu_source.cpu_library() is not None, "the C kernels did not build: a C compiler is needed"


@pytest.fixture(params=["c", "numpy"])
def cpu_kernels(request, monkeypatch):
    """Run the test once with the C kernels and once with the NumPy twins only; yields which."""
    _use(monkeypatch, request.param)
    yield request.param
    monkeypatch.undo()
    cpu_source.cpu_library.cache_clear()


@pytest.fixture
def numpy_only(monkeypatch):
    """The NumPy twins only, as on a machine without a C compiler."""
    _use(monkeypatch, "numpy")
    yield
    monkeypatch.undo()
    cpu_source.cpu_library.cache_clear()
