"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodel import TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny phi model (HF folder + F32/F16 GGUF), built once per test session."""
    root: Path = tmp_path_factory.mktemp("tiny")
    return build_tiny_model(root)
