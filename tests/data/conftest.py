"""Fixtures for the data tests."""

from pathlib import Path

import pytest

from dataset_builders import standard_detreidx_spec, write_detreidx


@pytest.fixture
def detreidx_root(tmp_path) -> Path:
    return write_detreidx(tmp_path / "detreidx", standard_detreidx_spec())


@pytest.fixture(scope="module")
def detreidx_root_module(tmp_path_factory) -> Path:
    """The standard DetReIDX tree, shared by a module's tests that only read it."""
    return write_detreidx(tmp_path_factory.mktemp("detreidx") / "src", standard_detreidx_spec())
