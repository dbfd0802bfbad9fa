"""The package installs with kernels/ mapped to xfd.kernels, and imports without a GPU."""

import importlib
import pathlib

import xfd


def test_version_is_set():
    assert xfd.__version__.count(".") == 2


def test_kernels_are_installed_as_xfd_kernels():
    kernels = importlib.import_module("xfd.kernels")
    assert pathlib.Path(kernels.__file__).parent.name == "kernels"
