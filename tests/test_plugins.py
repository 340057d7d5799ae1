"""A third-party strategy and a third-party backend, from a package in a temp folder, registered by their
importable specs and used by ``tune`` with two worker processes (which must find them too)."""

from __future__ import annotations

import sys
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

from autoprompt import AutopromptError
from autoprompt.backends import registry as backends
from autoprompt.backends.store import load_model
from autoprompt.experiments.tune import TuneConfig, storage_url, tune
from autoprompt.search import SearchSpec, registry, run_search
from autoprompt.testing.tiny import toy_task_file

# a backend that is only a `ScoringModel`: a "model" scoring each class by how often its label word is in the input
BACKEND = '''
import contextlib
import hashlib

import torch

from autoprompt.backends import Encoded, Scores


class WordCounter:
    kind, shares_prefix, licence = "causal", False, None
    max_length = context_length = 512
    device = torch.device("cpu")

    def __init__(self, name):
        self.name = name
        self.vocab = {}

    def tokenize(self, text):
        return tuple(self.vocab.setdefault(w, len(self.vocab)) for w in text.split())

    def decode(self, ids):
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words[i] for i in ids)

    def encode(self, prompt, example, demos=None):
        ids = self.tokenize(prompt.template.render(example.fields).replace("[P]", ""))
        return Encoded(ids, len(ids))

    def word_table(self, prompt, labels):
        return [[self.tokenize(w) for w in ws] for ws in prompt.verbalizer.for_labels(labels)]

    def label_logprobs(self, batch, words, gold=None, soft=None):
        counts = torch.tensor([[float(sum(e.ids.count(w[0]) for w in ws)) for ws in words] for e in batch])
        return Scores(counts.log_softmax(-1), torch.zeros(len(batch), dtype=torch.long))

    def check_template(self, template): ...
    def check_triggers(self, prompt): ...

    def content_free_texts(self):
        return ["", "N/A"]

    def weights_checksum(self):
        return hashlib.sha256(b"no weights").hexdigest()

    def computing_in(self, dtype):
        return contextlib.nullcontext()


def load(target, **options):
    return WordCounter(f"words:{target}")
'''

# a strategy that tries label words from a fixed list, one candidate verbalizer per step
STRATEGY = '''
import dataclasses
from dataclasses import dataclass

from autoprompt import Verbalizer
from autoprompt.search import SearchState, Searcher, hyper


class SynonymState(SearchState):
    tried: dict  # verbalizer JSON -> train objective


@dataclass
class Synonyms(Searcher[SynonymState]):
    """Label words from a fixed list of synonyms.

    Args:
        choices: how many synonym pairs to try.
    """

    name = "synonyms"
    summary = "label words from a fixed list"
    searches = frozenset({"verbalizer"})
    default_budget = 500
    PAIRS = [("bad", "good"), ("awful", "great"), ("dull", "fine")]

    choices: int = hyper(3, low=1)

    def start(self, ctx):
        return {"tried": {}, "best_dev": ctx.evaluator.score(ctx.start, ctx.dev).score}

    def step(self, ctx, state):
        pair = self.PAIRS[len(state["tried"])]
        prompt = dataclasses.replace(ctx.start, verbalizer=Verbalizer(dict(zip(ctx.task.labels, [[w] for w in pair]))))
        calibrated = ctx.calibrate([prompt])[0]
        state["tried"][str(prompt.verbalizer.to_json())] = ctx.objective_scores([calibrated], ctx.train)[0]
        state["done"] = len(state["tried"]) >= min(self.choices, len(self.PAIRS))
        return state

    def candidates(self, ctx, state):
        ranked = sorted(state["tried"], key=lambda v: -state["tried"][v])
        pairs = {str(Verbalizer(dict(zip(ctx.task.labels, [[w] for w in p]))).to_json()): p for p in self.PAIRS}
        return ctx.calibrate([dataclasses.replace(ctx.start, verbalizer=Verbalizer(dict(zip(
            ctx.task.labels, [[w] for w in pairs[v]])))) for v in ranked]) or [ctx.start]

    def best(self, ctx, state):
        return self.candidates(ctx, state)[0]
'''


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """``thirdparty_plugins`` importable from a temp folder (spawned workers inherit ``sys.path``)."""
    package = tmp_path / "site" / "thirdparty_plugins"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "backend.py").write_text(textwrap.dedent(BACKEND))
    (package / "strategy.py").write_text(textwrap.dedent(STRATEGY))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.register("thirdparty_plugins.strategy:Synonyms")
    backends.register_backend("words", "thirdparty_plugins.backend:load")
    yield package
    registry.unregister("synonyms")
    backends.unregister_backend("words")
    sys.modules.pop("thirdparty_plugins.strategy", None)
    sys.modules.pop("thirdparty_plugins.backend", None)
    sys.modules.pop("thirdparty_plugins", None)


def test_a_registered_backend_loads_by_its_scheme_and_runs_a_search(plugin_package, tmp_path):
    lm = load_model("words:counts")
    assert type(lm).__name__ == "WordCounter" and lm.name == "words:counts"
    assert backends.carried() == {"words": "thirdparty_plugins.backend:load"}
    assert registry.carried()["synonyms"] == "thirdparty_plugins.strategy:Synonyms"
    spec = SearchSpec(task=str(toy_task_file(tmp_path)), strategy="synonyms", model="words:counts", budget=400,
                      out=str(tmp_path / "runs"), shots=None)
    result = run_search(spec)
    assert result.model == "words:counts" and result.backbone.unchanged
    assert result.steps == 3 and result.scores.test >= 0


def test_a_scoring_only_backend_refuses_what_it_cannot_do_in_one_line(plugin_package, tmp_path):
    spec = SearchSpec(task=str(toy_task_file(tmp_path)), strategy="gradient", model="words:counts", budget=400,
                      out=str(tmp_path / "runs"))
    with pytest.raises(AutopromptError, match=r"^model words:counts only scores discrete prompts; it cannot compute "
                                              r"trigger gradients \(that needs a backend with the GradientModel"):
        run_search(spec)


def test_a_third_party_strategy_and_backend_reach_two_spawned_workers(plugin_package, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOPROMPT_DB", raising=False)
    cfg = TuneConfig(task=str(toy_task_file(tmp_path)), strategy="synonyms", n_trials=4,
                     space={"choices": {"type": "int", "low": 1, "high": 3}},
                     storage=storage_url(None, tmp_path / "runs"), study="toy-synonyms", out=str(tmp_path / "runs"),
                     model="words:counts", budget=400, heartbeat=2, grace=6)
    result = tune(cfg, workers=2)
    trials = optuna.load_study(study_name=cfg.study, storage=cfg.storage).get_trials()
    # the parent runs no trial with two workers: every one was a spawned worker's, which found both plug-ins
    # (a worker racing the other near the end may start one more, failed as surplus)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert len(complete) == 4 and all(t.user_attrs.get("surplus") for t in others), \
        [(t.number, t.state, t.user_attrs) for t in trials]
    assert result["best"]["params"]["choices"] in (1, 2, 3)


def test_an_unimportable_spec_is_one_line():
    with pytest.raises(AutopromptError, match=r"^cannot import 'nowhere_at_all:Thing' .*on sys.path\?$"):
        registry.register("nowhere_at_all:Thing")
    with pytest.raises(AutopromptError, match="not an importable spec"):
        backends.register_backend("x", "no-colon")
        backends.backend_loader("x")
    backends.unregister_backend("x")
