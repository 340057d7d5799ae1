"""Search framework: registry, parameters, conformance, the gradient step, resume, import direction."""

from __future__ import annotations

import dataclasses
import json
import weakref
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from autoprompt import AutopromptError, Budget, BudgetExhausted, Evaluator, search
from autoprompt.prompts import Calibration, Prompt, Template, Verbalizer, load_prompt
from autoprompt.results.record import Interrupted, RunRecord
from autoprompt.search import (
    Capability,
    SearchContext,
    Searcher,
    SearchSpec,
    SlotReadout,
    SoftTraining,
    TriggerGradients,
    available,
    create,
    run_search,
    with_triggers,
)
from autoprompt.tasks.base import examples_fingerprint
from autoprompt.testing.conformance import check_minimum_budget, check_strategy
from autoprompt.testing.tiny import NEGATIVE, POSITIVE

REPO = Path(__file__).resolve().parents[1]
SMALL = {"manual": {}, "random": {"num_candidates": 3, "rescore_examples": 6},
         "gradient": {"num_candidates": 4, "batch_size": 6, "rescore_examples": 8}}


def test_registry_has_the_strategies():
    assert {"manual", "random", "gradient"} <= set(available())


@pytest.mark.parametrize("name", sorted(available()))
def test_conformance(name, causal, task):
    params = SMALL.get(name, {})
    budget = max(250, create(name, params).minimum_budget(len(task.train), len(task.dev)))
    check_strategy(name, params, budget=budget, lm=causal, data=task)


def test_conformance_gcg_and_masked(masked, task):
    check_strategy("gradient", {"positions": "all", "num_candidates": 4, "batch_size": 6}, budget=250, data=task)
    check_strategy("gradient", {"num_candidates": 3, "batch_size": 6, "template": "{sentence} [T] [T] it was [P] ."},
                   budget=200, lm=masked, data=task)


def test_params_are_validated():
    g = create("gradient", ["num_candidates=20", "positions=all", "filter_proper_nouns=true"])
    assert (g.num_candidates, g.positions, g.filter_proper_nouns) == (20, "all", True)
    with pytest.raises(AutopromptError, match=r"no parameter 'nope'.*num_candidates: int = 10"):
        create("gradient", ["nope=1"])
    with pytest.raises(AutopromptError, match="num_candidates='ten' is not a valid int"):
        create("gradient", ["num_candidates=ten"])
    with pytest.raises(AutopromptError, match="positions='some' is not a valid random\\|all"):
        create("gradient", ["positions=some"])
    with pytest.raises(AutopromptError, match="must be at least 1"):
        create("gradient", {"num_candidates": 0})
    with pytest.raises(AutopromptError, match="unknown strategy 'nope'"):
        create("nope")
    with pytest.raises(AutopromptError, match="not key=value"):
        create("gradient", ["num_candidates"])


def test_triggers_go_after_the_last_field():
    t = with_triggers(Template("Review: {sentence}\nSentiment (positive or negative): [P]"), 3)
    assert t.source == "Review: {sentence} [T] [T] [T]\nSentiment (positive or negative): [P]"
    assert with_triggers(Template("{a} x [T] [P]"), 5).num_triggers == 1


def test_gradient_candidates_equal_brute_force(causal, task):
    """The HotFlip candidates are the top −E·g tokens among allowed ones, checked token by token."""
    g = create("gradient", {"num_candidates": 5, "batch_size": 8})
    budget = Budget()
    ctx = SearchContext(causal, task.task, task.train, task.dev, Evaluator(causal, task.task, budget=budget),
                        budget, seed=0)
    from autoprompt import Prompt  # noqa: PLC0415

    state = g.start(ctx)
    prompt = Prompt.from_json(state["prompt"])
    batch = task.train[:8]
    grad, _ = causal.trigger_gradient([causal.encode(prompt, ex) for ex in batch],
                                      causal.word_table(prompt, task.task.labels), [ex.label for ex in batch])
    cands = g.hotflip(ctx, prompt, grad)
    pos = next(i for i in range(len(prompt.trigger_ids)) if cands[0][i] != prompt.trigger_ids[i])
    allowed = g.allowed_tokens(ctx, prompt)
    emb = causal.embedding_matrix().detach()
    brute = {}
    for tok in range(emb.shape[0]):
        if allowed[tok]:
            brute[tok] = -float(sum(emb[tok, h] * grad[pos, h] for h in range(emb.shape[1])))
    expected = sorted(brute, key=lambda t: -brute[t])[:5]
    assert [c[pos] for c in cands] == [t for t in expected if t != prompt.trigger_ids[pos]][: len(cands)]
    label_tokens = {t for ws in causal.word_table(prompt, task.task.labels) for w in ws for t in w}
    assert not label_tokens & {c[pos] for c in cands}


def test_resume_equals_uninterrupted(causal, task, tmp_path):
    params = {"num_candidates": 4, "batch_size": 6}
    spec = SearchSpec(task="tiny", strategy="gradient", params=params, budget=400, seed=5, out=str(tmp_path / "a"))
    full = run_search(spec, lm=causal, data=task)
    spec_b = SearchSpec(task="tiny", strategy="gradient", params=params, budget=400, seed=5, out=str(tmp_path / "b"))
    part = run_search(spec_b, lm=causal, data=task, stop_after=1)
    assert isinstance(part, Interrupted) and part.step == 1
    # a half-written line after the checkpoint (killed mid-append) is dropped on resume
    with open(Path(part.run_dir) / "trace.jsonl", "a") as f:
        f.write('{"step": 2, "bro')
    resumed = run_search(spec_b, lm=causal, data=task, resume=part.run_dir)
    assert resumed.prompt_fingerprint == full.prompt_fingerprint
    assert resumed.scores == full.scores and resumed.budget == full.budget
    assert resumed.steps == full.steps
    trace = [json.loads(line) for line in (Path(part.run_dir) / "trace.jsonl").read_text().splitlines()]
    assert [t["step"] for t in trace] == list(range(1, full.steps + 1))


def test_run_artifacts(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="gradient", params={"num_candidates": 3, "batch_size": 6}, budget=300,
                      out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    run_dir = Path(result.run_dir)
    for name in ("spec.json", "trace.jsonl", "prompt.json", "result.json", "checkpoint.json"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "result.json").read_text())
    for key in ("task", "strategy", "model", "seed", "shots", "data_seed", "params", "metric", "prompt", "scores",
                "baseline", "budget", "wall_s", "versions", "run_dir"):
        assert key in saved, key
    assert set(saved["scores"]) == {"dev", "test"} and set(saved["budget"]) >= {"forwards", "backwards"}
    record = RunRecord.from_json(saved)  # the typed record reads and writes result.json exactly
    assert record.to_json() == saved and list(record.to_json()) == list(saved)
    assert (record.scores.dev, record.baseline.test, record.budget.used) == (
        saved["scores"]["dev"], saved["baseline"]["test"], saved["budget"]["used"])
    assert SearchSpec.from_json(json.loads((run_dir / "spec.json").read_text())).params["num_candidates"] == 3
    # the prompt artifact scores the same through the evaluator
    from autoprompt import Prompt  # noqa: PLC0415

    again = Evaluator(causal, task.task).score(Prompt.load(run_dir / "prompt.json"), task.test).score
    assert again == pytest.approx(saved["scores"]["test"])


def test_manual_baseline_is_scored_once_per_process(causal, task, tmp_path, monkeypatch):
    scored = []
    real = Evaluator.score

    def counting(self, prompt, examples, progress=False):
        scored.append((prompt.fingerprint, examples_fingerprint(examples)))
        return real(self, prompt, examples, progress)

    monkeypatch.setattr(Evaluator, "score", counting)
    monkeypatch.setattr(search.finish, "_baselines", weakref.WeakKeyDictionary())  # other tests' runs filled it
    manual = (task.task.default_prompt.fingerprint, examples_fingerprint(task.test))  # searches never score test
    first = run_search(SearchSpec(task="tiny", strategy="random", params=SMALL["random"], budget=150,
                                  out=str(tmp_path)), lm=causal, data=task)
    before = scored.count(manual)
    second = run_search(SearchSpec(task="tiny", strategy="random", params=SMALL["random"], budget=150, seed=1,
                                   out=str(tmp_path)), lm=causal, data=task)
    assert before == 1 and scored.count(manual) == 1  # the second run reused the baseline
    assert second.baseline == first.baseline


def test_corrupt_checkpoint_is_one_line(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="gradient", params={"num_candidates": 3, "batch_size": 6}, budget=300,
                      out=str(tmp_path))
    part = run_search(spec, lm=causal, data=task, stop_after=1)
    (Path(part.run_dir) / "checkpoint.json").write_text("{not json")
    with pytest.raises(AutopromptError, match="corrupt"):
        run_search(spec, lm=causal, data=task, resume=part.run_dir)


def test_budget_counts_backwards_double(causal, task):
    spent = check_strategy("gradient", {"num_candidates": 2, "batch_size": 4, "accumulation_steps": 2},
                           budget=200, lm=causal, data=task).budget
    assert spent.used == spent.forwards + 2 * spent.backwards and spent.backwards > 0


def test_model_untouched_by_gradient_search(causal, task, tmp_path):
    from autoprompt.testing.conformance import weights_checksum  # noqa: PLC0415

    before = weights_checksum(causal.model)
    run_search(SearchSpec(task="tiny", strategy="gradient", params={"num_candidates": 3, "batch_size": 6},
                          budget=300, out=str(tmp_path)), lm=causal, data=task)
    assert weights_checksum(causal.model) == before
    assert all(p.grad is None for p in causal.model.parameters())
    assert torch.is_grad_enabled()


def test_word_start_tokens(causal, masked):
    bpe = causal.tokenizer.convert_ids_to_tokens(causal.word_start_tokens().nonzero()[:, 0].tolist())
    assert bpe and all(t.startswith("Ġ") and t[1:].isalpha() for t in bpe)
    wp = masked.tokenizer.convert_ids_to_tokens(masked.word_start_tokens().nonzero()[:, 0].tolist())
    assert wp and not any(t.startswith("##") or t.startswith("[") for t in wp)


@pytest.mark.parametrize("name", sorted(set(available()) - {"manual"}))
def test_the_minimum_budget_buys_one_step_and_one_less_is_refused(name, causal, task):
    params = {**SMALL.get(name, {}), **({"steps": 4, "eval_every": 2} if name == "ptuning" else {})}
    check_minimum_budget(name, params, causal, task)


def test_ctrl_c_names_the_run_folder_to_resume(causal, task, tmp_path):
    from autoprompt.errors import SearchInterrupted  # noqa: PLC0415

    def interrupt(step, info):
        raise KeyboardInterrupt

    spec = SearchSpec(task="tiny", strategy="random", params=SMALL["random"], budget=300, out=str(tmp_path))
    with pytest.raises(SearchInterrupted) as stop:
        run_search(spec, lm=causal, data=task, on_step=interrupt)
    assert (Path(stop.value.run_dir) / "checkpoint.json").is_file()
    assert run_search(spec, lm=causal, data=task, resume=stop.value.run_dir).steps >= 1


def test_a_run_from_before_a_parameter_existed_is_not_reused(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="random", params=SMALL["random"], budget=300, out=str(tmp_path))
    run_dir = Path(run_search(spec, lm=causal, data=task).run_dir)
    assert search.find_run(spec) == run_dir and search.finished_result(spec) is not None
    old = json.loads((run_dir / "spec.json").read_text())
    del old["params"]["rescore_examples"]  # as an older version of the strategy wrote it
    (run_dir / "spec.json").write_text(json.dumps(old))
    assert search.find_run(spec) is None


@dataclasses.dataclass
class _Vandal(Searcher):
    """A broken strategy: it writes the backbone's weights."""

    name: ClassVar[str] = "vandal"
    summary: ClassVar[str] = "adds 1 to the input embeddings"

    def start(self, ctx: SearchContext) -> dict:
        return {}

    def step(self, ctx: SearchContext, state: dict) -> dict:
        with torch.no_grad():
            ctx.lm.embedding_matrix().add_(1.0)  # a view of the weights: the checksum sees it
        return {"done": True}

    def best(self, ctx: SearchContext, state: dict) -> Prompt:
        return ctx.task.default_prompt


def test_register_adds_a_strategy_in_process():
    assert "vandal" not in available()
    search.register(_Vandal)
    try:
        assert available()["vandal"] is _Vandal and isinstance(create("vandal"), _Vandal)
    finally:
        search.unregister("vandal")
    with pytest.raises(AutopromptError, match="unknown strategy 'vandal'"):
        create("vandal")
    with pytest.raises(AutopromptError, match="not a Searcher dataclass"):
        search.register(dict)  # type: ignore[arg-type]


def test_a_strategy_that_writes_the_backbone_reports_nothing(task, tmp_path):
    from autoprompt.testing import tiny_causal_lm  # noqa: PLC0415

    search.register(_Vandal)
    try:
        with pytest.raises(AutopromptError, match="vandal changed the backbone's weights; this is a bug in it"):
            run_search(SearchSpec(task.task.name, "vandal", out=str(tmp_path)), lm=tiny_causal_lm(), data=task)
    finally:
        search.unregister("vandal")
    assert list(tmp_path.rglob("spec.json")) and not list(tmp_path.rglob("result.json"))
    assert not list(tmp_path.rglob("prompt.json"))


def test_every_parameter_has_help_and_bounds_are_one_rule():
    from autoprompt.search import describe_strategy  # noqa: PLC0415

    for name, cls in available().items():
        undocumented = [p["name"] for p in describe_strategy(cls) if not p["help"]]
        assert not undocumented, f"{name}: document {undocumented} in the class docstring's Args section"
    bounded = {p["name"]: p["low"] for p in describe_strategy(available()["gradient"]) if p["low"] is not None}
    assert bounded == {"min_gain": 0, "num_triggers": 1, "num_candidates": 1, "batch_size": 1,
                       "accumulation_steps": 1, "rescore_examples": 1, "fluency": 0, "ensemble": 1}
    for strategy, key in [("random", "num_candidates"), ("verbalizer", "k"), ("paraphrase", "beam"),
                          ("ptuning", "steps"), ("gradient", "min_gain")]:
        with pytest.raises(AutopromptError, match=rf"^{strategy}: `{key}` must be at least"):
            create(strategy, {key: -1})
    create("gradient", {"rescore_examples": None})  # None passes a bound


def test_cli_explains_one_strategy():
    from typer.testing import CliRunner  # noqa: PLC0415

    from autoprompt.cli import app  # noqa: PLC0415

    shown = CliRunner().invoke(app, ["strategies", "gradient"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "fluency" in shown.output and "negative log-likelihood" in shown.output
    bad = CliRunner().invoke(app, ["search", "--task", "sst2", "--param", "num_candidates=0"])
    assert bad.exit_code == 2 and "--param num_candidates must be at least 1, got 0" in bad.output


def test_strategies_see_a_read_only_model(causal, task):
    budget = Budget(100)
    ctx = SearchContext(causal, task.task, task.train, task.dev, Evaluator(causal, task.task, budget=budget),
                        budget, seed=0)
    assert ctx.lm.tokenize(" good") == causal.tokenize(" good") and ctx.lm.kind == causal.kind
    for hidden in ("model", "label_logprobs", "trigger_gradient", "slot_features", "soft_logprobs"):
        with pytest.raises(AttributeError, match="metered operations"):
            getattr(ctx.lm, hidden)
    with pytest.raises(AttributeError, match="read-only"):
        ctx.lm.max_length = 3
    prompt = task.task.default_prompt
    hidden, logp = ctx.ask(SlotReadout).slot_features([causal.encode(prompt, ex) for ex in task.train[:5]])  # charged
    assert hidden.shape[0] == logp.shape[0] == 5 and budget.forwards == 5


class _Norms(Capability):
    """A family's own capability, written outside the core: the norm of each row's hidden state at [P]."""

    def norms(self, encoded):
        with self._budget.paying(forwards=len(encoded)):
            hidden, _ = self._model.slot_features(encoded)
        return hidden.norm(dim=-1)


def test_a_strategy_asks_for_capabilities_and_a_new_family_brings_its_own(causal, task):
    budget = Budget(100)
    ctx = SearchContext(causal, task.task, task.train, task.dev, Evaluator(causal, task.task, budget=budget),
                        budget, seed=0)
    assert ctx.ask(TriggerGradients) is ctx.ask(TriggerGradients)  # built once per search
    assert not hasattr(ctx, "trigger_gradient") and not hasattr(ctx, "slot_features")  # the context does not grow
    encoded = [causal.encode(task.task.default_prompt, ex) for ex in task.train[:3]]
    norms = ctx.ask(_Norms).norms(encoded)
    expected = causal.slot_features(encoded)[0].norm(dim=-1)
    assert torch.allclose(norms, expected) and budget.forwards == 3  # paid before it ran
    with pytest.raises(BudgetExhausted):
        ctx.ask(_Norms).norms(encoded * 40)  # 120 forwards: more than the 97 left, refused before running
    assert budget.forwards == 3


def test_the_model_view_shows_exactly_the_strategy_protocol(causal, task):
    from autoprompt.search import StrategyModel  # noqa: PLC0415
    from autoprompt.search.model_view import ModelView  # noqa: PLC0415

    members = {n for n in dir(StrategyModel) if not n.startswith("_")}
    assert ModelView._shown == members and "prefix_from_text" not in members and "model" not in members
    budget = Budget(100)
    ctx = SearchContext(causal, task.task, task.train, task.dev, Evaluator(causal, task.task, budget=budget),
                        budget, seed=0)
    for name in members:  # every member the protocol lists is there on a real backend
        getattr(ctx.lm, name)
    with pytest.raises(AttributeError, match="metered operations"):
        ctx.lm.prefix_from_text  # noqa: B018  # runs the model: only through the context, charged
    assert not ctx.lm.embedding_matrix().requires_grad
    ids = causal.tokenize(" It was")
    kv = ctx.ask(SoftTraining).prefix_from_text(ids)
    assert budget.forwards == 1 and tuple(kv.shape) == ctx.lm.prefix_shape(len(ids))


@dataclasses.dataclass
class _Scribbler(Searcher):
    """Mutates the state it is given, then runs out of budget half-way through its second step."""

    name: ClassVar[str] = "scribbler"
    summary: ClassVar[str] = "writes its state in place"

    def start(self, ctx: SearchContext) -> dict:
        return {"marks": [], "best_dev": 0.0}

    def step(self, ctx: SearchContext, state: dict) -> dict:
        state["marks"].append(ctx.step_index)
        if ctx.step_index == 1:
            ctx.budget.require(forwards=10**9)  # raises BudgetExhausted: the step never returns
        return state

    def best(self, ctx: SearchContext, state: dict) -> Prompt:
        return ctx.task.default_prompt

    def details(self, ctx: SearchContext, state: dict) -> dict:
        return {"marks": list(state["marks"])}


def test_a_step_that_fails_half_way_leaves_the_state_as_it_was(task, tmp_path):
    """The core hands each step a copy: the first step's mark stays, the failed second step's does not."""
    from autoprompt.testing import tiny_causal_lm  # noqa: PLC0415

    search.register(_Scribbler)
    try:
        result = run_search(SearchSpec(task.task.name, "scribbler", budget=500, out=str(tmp_path)),
                            lm=tiny_causal_lm(), data=task)
    finally:
        search.unregister("scribbler")
    assert result.details["marks"] == [0] and result.steps == 1


@dataclasses.dataclass
class _PlainWords(Searcher):
    """Proposes other label words and never calibrates: the core reads them by the search's calibration."""

    name: ClassVar[str] = "plainwords"
    summary: ClassVar[str] = "other label words, uncalibrated"

    def start(self, ctx: SearchContext) -> dict:
        return {"best_dev": 0.0}

    def step(self, ctx: SearchContext, state: dict) -> dict:
        return {**state, "done": True}

    def best(self, ctx: SearchContext, state: dict) -> Prompt:
        words = dict(zip(ctx.task.labels, ([NEGATIVE[1]], [POSITIVE[1]]), strict=True))
        return dataclasses.replace(ctx.start, verbalizer=Verbalizer(words))


@dataclasses.dataclass
class _SelfCalibrated(_PlainWords):
    name: ClassVar[str] = "selfcalibrated"
    calibrates: ClassVar[bool] = True  # says it calibrates itself (it does not): the core leaves it alone


@pytest.mark.parametrize("strategy", [_PlainWords, _SelfCalibrated])
def test_the_core_calibrates_candidates_a_strategy_left_uncalibrated(strategy, causal, task, tmp_path):
    search.register(strategy)
    try:
        result = run_search(SearchSpec(task.task.name, strategy.name, params={"gate": False}, budget=500,
                                       out=str(tmp_path)), lm=causal, data=task)
    finally:
        search.unregister(strategy.name)
    reported = load_prompt(Path(result.run_dir) / "prompt.json")
    assert reported.verbalizer.words[task.task.labels[1]] == (POSITIVE[1],)
    if strategy is _SelfCalibrated:
        assert not reported.calibration.active
        return
    # the search's calibration (prior, the default), estimated on all of train as ctx.calibrate does
    assert reported.calibration.method == "prior" and reported.calibration.active
    plain = dataclasses.replace(reported, calibration=Calibration())
    expected = Evaluator(causal, task.task).calibrate([plain], "prior", task.train)[0]
    assert expected.calibration.log_prior is not None
    assert reported.calibration.log_prior == pytest.approx(dict(expected.calibration.log_prior), abs=1e-6)


def test_a_result_from_before_the_record_reads_with_defaults():
    old = {"task": "sst2", "strategy": "gradient", "model": "smollm2-135m", "params": {"calibration": "prior"},
           "prompt_text": "{sentence} It was [P]", "triggers": ["Ġthe", "Ġgood"], "scores": {"dev": 0.7, "test": 0.6},
           "baseline": {"dev": 0.65, "test": 0.62}, "budget": {"forwards": 5, "backwards": 1, "used": 7, "limit": 10},
           "run_dir": "/runs/x", "a_future_key": [1]}
    record = RunRecord.from_json(old)
    assert (record.variant, record.calibration, record.backbone, record.trigger_text) == ("", "prior", None, "")
    assert record.shown_prompt == "{sentence} It was [P]  (triggers: Ġthe Ġgood)"  # raw pieces, as they were saved
    assert record.to_json()["a_future_key"] == [1] and record.recorded


def test_a_search_whose_steps_cost_nothing_stops_with_a_warning(tmp_path, tiny_model_dir):
    """One trigger over a tiny vocabulary: every candidate is soon one scored before (free), so the
    budget never runs out; the loop stops the search once steps keep costing nothing."""
    from autoprompt.search.loop import IDLE_STEPS  # noqa: PLC0415
    from autoprompt.testing.tiny import toy_task_file  # noqa: PLC0415

    spec = SearchSpec(task=str(toy_task_file(tmp_path)), strategy="random", model=str(tiny_model_dir),
                      params={"num_candidates": 2, "num_triggers": 1, "rescore_examples": 4}, budget=300,
                      out=str(tmp_path / "runs"))
    result = run_search(spec)
    assert any("cost no budget" in w for w in result.warnings) and result.budget.used < 300
    assert result.steps >= IDLE_STEPS


@dataclasses.dataclass
class _Dice(Searcher):
    """A broken strategy: its label words come from an unseeded random draw."""

    name: ClassVar[str] = "dice"
    summary: ClassVar[str] = "label words by an unseeded die"
    gated: ClassVar[bool] = False

    def start(self, ctx: SearchContext) -> dict:
        import random  # noqa: PLC0415

        words = random.SystemRandom().sample(["good", "bad", "great", "awful", "fine", "dull"], 2)
        return {"words": words, "done": True}

    def step(self, ctx: SearchContext, state: dict) -> dict:
        return state

    def best(self, ctx: SearchContext, state: dict) -> Prompt:
        manual = ctx.task.default_prompt
        return dataclasses.replace(manual, verbalizer=dict(zip(ctx.task.labels, ([w] for w in state["words"]),
                                                                  strict=True)))


@pytest.mark.parametrize("broken", [_Dice, _Vandal])
def test_the_conformance_check_fails_a_broken_strategy(causal, task, broken):
    from autoprompt.testing import tiny_causal_lm  # noqa: PLC0415

    search.register(broken)
    try:
        with pytest.raises((AssertionError, AutopromptError), match=r"not reproducible|changed the backbone"):
            for _ in range(5):  # an unseeded draw repeats itself 1 time in 30 per run: five runs all alike is rare
                check_strategy(broken.name, lm=tiny_causal_lm("llama") if broken is _Vandal else causal, data=task)
    finally:
        search.unregister(broken.name)
