"""Shared fixtures: tiny in-process models and the real data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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


@contextmanager
def _weights_kept(lm) -> Iterator[None]:
    """Assert that the code run inside leaves every weight of ``lm`` bit-identical and frozen as it was
    (a direct comparison: the run's own ``backbone`` record cannot say otherwise, since a run whose
    checksum changed raises instead of reporting)."""
    import torch  # noqa: PLC0415

    before = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    frozen = [p.requires_grad for p in lm.model.parameters()]
    yield
    after = lm.model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"weights changed: {changed[:5]}"
    assert [p.requires_grad for p in lm.model.parameters()] == frozen


@pytest.fixture
def weights_kept() -> Callable[..., AbstractContextManager[None]]:
    """``with weights_kept(lm): ...`` fails unless the backbone is left exactly as it was."""
    return _weights_kept
