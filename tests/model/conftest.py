"""Shared helpers for the model tests: tiny configs (xfd/configs/tiny.yaml + overrides) and tiny inputs."""

import pytest
import torch

from xfd.config import load_config
from xfd.model import build_model


def tiny_config(*overrides: str):
    """ModelConfig of tiny.yaml with dotted overrides relative to `model.` (e.g. "temporal.pooling=mean")."""
    return load_config("tiny.yaml", [f"model.{o}" for o in overrides]).model


def tiny_model(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_config(*overrides))


def tiny_inputs(batch: int = 2, frames: int = 4, seed: int = 1, size=(128, 64)):
    """frames (B, L, 3, H, W), platform (B,) alternating ground/aerial, meta (B, 3) with ground rows = last bins."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 3, *size, generator=g)
    platform = torch.arange(batch) % 2
    meta = torch.stack([torch.randint(0, 18, (batch,), generator=g), torch.randint(0, 18, (batch,), generator=g),
                        torch.randint(0, 3, (batch,), generator=g)], dim=1)
    meta[platform == 0] = torch.tensor([18, 18, 3])
    return x, platform, meta


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def make_inputs():
    return tiny_inputs
