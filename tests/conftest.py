"""Shared fixtures: tiny random encoder folders, built once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/ on the path so test modules can `import tiny_models`, however pytest is invoked.
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_bert, make_tiny_vit, make_tiny_wav2vec2  # noqa: E402


@pytest.fixture(scope="session")
def tiny_encoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"image": ViT folder, "audio": Wav2Vec2 folder, "text": BERT folder}`` (seed 0)."""
    root = tmp_path_factory.mktemp("tiny_encoders")
    return {
        "image": make_tiny_vit(root / "vit"),
        "audio": make_tiny_wav2vec2(root / "wav2vec2"),
        "text": make_tiny_bert(root / "bert"),
    }
