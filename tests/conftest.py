"""Shared fixtures: tiny in-process models and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoprompt.testing import tiny_causal_lm, tiny_masked_lm, tiny_task

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    env = os.environ.get("AUTOPROMPT_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _data_dir()
    if path is None:
        pytest.skip("real data folder not found: set AUTOPROMPT_DATA_DIR (CI points it at ../shared/data)")
    return path


@pytest.fixture(scope="session")
def causal():
    return tiny_causal_lm("llama")


@pytest.fixture(scope="session")
def gpt2():
    return tiny_causal_lm("gpt2")


@pytest.fixture(scope="session")
def masked():
    return tiny_masked_lm()


@pytest.fixture(scope="session")
def task():
    return tiny_task()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, causal) -> Path:
    """The tiny causal model saved as a folder, for CLI tests (``--model <folder>``)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    causal.model.save_pretrained(path)
    causal.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_masked_dir(tmp_path_factory, masked) -> Path:
    path = tmp_path_factory.mktemp("tiny-bert")
    masked.model.save_pretrained(path)
    masked.tokenizer.save_pretrained(path)
    return path
