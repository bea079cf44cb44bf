"""Shared pytest fixtures. (A missing prerequisite: tests/needs.py, which fails under CI=true.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.tinymodel import TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny phi model (HF folder + F32/F16 GGUF), built once per test session."""
    root: Path = tmp_path_factory.mktemp("tiny")
    return build_tiny_model(root)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` run only where torch sees an NVIDIA GPU (CI has none)."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_model(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny model after memorising a few functions (see trained_model.py)."""
    from testkit.trained_model import train_tiny_model

    return train_tiny_model(tiny_model, tmp_path_factory.mktemp("trained"))
