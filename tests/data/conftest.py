"""Fixtures for the data tests."""

from pathlib import Path

import pytest

from dataset_builders import standard_detreidx_spec, write_detreidx


@pytest.fixture
def detreidx_root(tmp_path) -> Path:
    return write_detreidx(tmp_path / "detreidx", standard_detreidx_spec())
