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


HOLD_STRATEGY = '''
"""``hold``: a strategy that waits while a file exists, so a test can hold workers inside a search."""

import os
import time
from dataclasses import dataclass

from autoprompt.search import Searcher, hyper


@dataclass
class Hold(Searcher):
    name = "hold"
    summary = "waits while $AUTOPROMPT_TEST_HOLD exists (tests of killed workers)"
    default_budget = 100
    search_space = {"rounds": {"type": "int", "low": 1, "high": 3}}

    calibration: str = "none"
    rounds: int = hyper(1, low=1)

    def costs(self, train, dev):
        return dev, 0

    def start(self, ctx):
        return {"round": 0, "best_dev": ctx.evaluator.score(ctx.start, ctx.dev).score}

    def step(self, ctx, state):
        while os.path.exists(os.environ["AUTOPROMPT_TEST_HOLD"]):
            time.sleep(0.05)
        return {**state, "round": state["round"] + 1, "done": state["round"] + 1 >= self.rounds}

    def best(self, ctx, state):
        return ctx.start
'''


class Holding:
    """Workers started with `env` find the ``hold`` strategy (an entry point of a package in a temp
    folder) and wait inside its search until `release()`: the moment a killed-worker test needs,
    reached by a signal instead of by a search slow enough to be caught running."""

    def __init__(self, root: Path) -> None:
        site = root / "hold-site"
        (site / "autoprompt_test_hold").mkdir(parents=True)
        (site / "autoprompt_test_hold" / "__init__.py").write_text(HOLD_STRATEGY)
        info = site / "autoprompt_test_hold-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: autoprompt-test-hold\nVersion: 0\n")
        (info / "entry_points.txt").write_text("[autoprompt.searchers]\nhold = autoprompt_test_hold:Hold\n")
        self.file = root / "hold"
        self.file.touch()
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, "AUTOPROMPT_TEST_HOLD": str(self.file), "OMP_NUM_THREADS": "1"}

    def release(self) -> None:
        self.file.unlink(missing_ok=True)


@pytest.fixture
def holding(tmp_path) -> Iterator[Holding]:
    """A ``hold`` strategy for spawned CLI workers; released at the end whatever happened."""
    hold = Holding(tmp_path)
    yield hold
    hold.release()
