"""The end of every run, the same for every strategy: the gate, the held-out scores, ``result.json``.

The top candidates and the manual prompt are re-scored on every labelled non-test example the
strategy did not fit on, and the gate decides what is reported (`autoprompt.search.selection`).
Then the core, outside the budget, scores the reported prompt and the manual baseline on dev and
test, with paired-bootstrap deltas, and says so when dev and test disagree.
"""

from __future__ import annotations

import json
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch

from autoprompt.backends import GradientModel, ScoringModel
from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_bytes
from autoprompt.prompts import AnyPrompt, Prompt, save_prompt
from autoprompt.results.record import Backbone, Baseline, DevTest, RunRecord, Spent
from autoprompt.results.versions import versions
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.fitting import distinct_singles, fitted_parts
from autoprompt.scoring.scores import EvalResult
from autoprompt.search.base import Searcher, SearchState
from autoprompt.search.context import SearchContext
from autoprompt.search.registry import variant
from autoprompt.search.runs import RunDir, SearchSpec
from autoprompt.search.selection import Selection, bootstrap_delta, choose
from autoprompt.tasks.base import Example, TaskData, examples_fingerprint


@dataclass
class SearchRun:
    """One search as the loop runs it and hands it to `finish`: spec, strategy, data, context, state."""

    spec: SearchSpec
    searcher: Searcher[Any]
    data: TaskData
    lm: ScoringModel
    folder: RunDir
    ctx: SearchContext
    budget: Budget
    state: SearchState
    steps: int
    backbone_before: str
    started: float           # time.perf_counter() when this call began
    elapsed_before: float    # seconds spent by earlier calls (a resumed run)
    warnings: list[str] = field(default_factory=list)
    dtype: str = "fp32"      # what the steps computed in (`autoprompt.backends.precision`); the gate is fp32


def _backbone_after(run: SearchRun) -> str:
    """The weights' checksum after the search; a strategy that changed them must not report anything."""
    after = run.lm.weights_checksum()
    if after != run.backbone_before:
        raise AutopromptError(f"strategy {run.spec.strategy} changed the backbone's weights; this is a bug in it")
    return after


def _gate(run: SearchRun, decided: Selection | None = None) -> tuple[AnyPrompt, Selection | None]:
    """The strategy's top candidates against the prompt it started from (the task's manual prompt or
    a warm start) on the examples it did not fit on; the chosen prompt and the decision (``decided``:
    one the core already made on evidence of its own, a cross-fitted pipeline's out-of-fold scores)."""
    run.ctx.evaluator.budget = None  # the selection is the core's, not the strategy's, to pay
    if run.dtype != "fp32":  # the gate reads fp32 scores, never the steps' bf16 ones from the cache
        run.ctx.evaluator = Evaluator(run.lm, run.data.task)
    if decided is not None:
        return decided.chosen, decided
    holdout = _selection_examples(run)
    candidates = run.searcher.candidates(run.ctx, run.state)[: run.searcher.final_candidates]
    if not run.searcher.calibrates:  # read by the search's rule and calibration, fitted on all of train
        candidates = run.ctx.calibrate(candidates)
    if not run.searcher.gated:
        return candidates[0], None
    against = "manual prompt" if run.ctx.warm_start is None else "start prompt"
    selection = choose(run.ctx.evaluator, candidates, run.ctx.start, holdout, run.searcher.objective,
                       run.searcher.min_gain, gate=run.searcher.gate, against=against)
    return selection.chosen, selection


def _refitted(run: SearchRun, chosen: AnyPrompt, selection: Selection | None,
              examples: Sequence[Example]) -> tuple[AnyPrompt, dict[str, Any]]:
    """``chosen`` with its fitted statistics (a rule's centroids and temperature, a calibration prior)
    re-estimated on ``examples`` once the gate has passed it, every choice kept; and what ``details``
    records of it (the gated prompt itself is kept as ``gated_prompt.json``).

    Why: a pipeline's stages fit on part of what they may see (the fit half of train, or of a fold) so
    that their gates judge on the rest; once the gate has judged, the estimates are made again from all
    of it (as cross-validation refits the chosen model on all the data). No example beyond
    ``examples`` is read, so the final gate's evidence stays read once."""
    fitted = {part for m in distinct_singles([chosen]) for part in fitted_parts(m)}
    if not examples or selection is None or not selection.reliable or not fitted:
        return chosen, {}
    refit = run.ctx.evaluator.refit(chosen, examples)
    gated = run.folder.path / "gated_prompt.json"
    save_prompt(_stamped(run, chosen), gated)  # its soft tensors, if any, are prompt.json's: refitting keeps them
    return refit, {"refit": {"on": len(examples), "gated_fingerprint": chosen.fingerprint, "gated_prompt": str(gated),
                             "what": sorted(fitted)}}


def _stamped(run: SearchRun, prompt: AnyPrompt) -> AnyPrompt:
    spec = run.spec
    return prompt.with_meta({"strategy": spec.strategy, "task": run.data.task.name, "model": run.lm.name,
                             "seed": spec.seed, "params": spec.params})


def finish_stage(run: SearchRun) -> dict[str, Any]:
    """The end of one pipeline stage: the gate against the stage's start on the stage's held-out
    examples (never dev or test), ``prompt.json``, and the stage's summary (``stage.json``)."""
    _backbone_after(run)
    best, selection = _gate(run)
    best = _stamped(run, best)
    run.folder.write_prompt(best)
    gain, se = (selection.gain, selection.se) if selection is not None else (0.0, 0.0)
    if selection is not None and not selection.reliable and selection.candidates[1:]:
        # the start won: report how far the best candidate fell short of it (the se is that candidate's)
        rows = selection.candidates
        gain = max(r["objective"] for r in rows[1:]) - rows[0]["objective"]
    return {"strategy": run.spec.strategy, "params": run.spec.params, "run_dir": str(run.folder.path),
            "prompt_fingerprint": best.fingerprint, "start_fingerprint": run.ctx.start.fingerprint,
            "passed": bool(selection and selection.reliable), "objective": run.searcher.objective,
            "gain": gain, "se": se, "ci95": [gain - 1.96 * se, gain + 1.96 * se] if se < math.inf else None,
            "n": selection.n if selection is not None else 0,
            "message": selection.message if selection is not None else f"{run.spec.strategy}: no selection",
            "budget": run.budget.to_json(), "steps": run.steps,
            "wall_s": round(time.perf_counter() - run.started + run.elapsed_before, 2),
            "details": run.searcher.details(run.ctx, run.state), "warnings": run.warnings}


def finish(run: SearchRun, progress: bool = False, decided: Selection | None = None,
           refit_on: Sequence[Example] = ()) -> RunRecord:
    """Gate (unless the core already ``decided``), write ``prompt.json``, score on dev and test, and
    return the run's record.

    ``refit_on``: where the gate passed, the chosen prompt's fitted statistics are re-estimated on these
    examples before it is reported (`_refitted`; a pipeline passes every example its stages could see).
    """
    spec, data, lm = run.spec, run.data, run.lm
    manual = data.task.default_prompt
    backbone_after = _backbone_after(run)
    best, selection = _gate(run, decided)
    selection_json = selection.to_json() if selection is not None else {
        "reliable": None, "message": f"{spec.strategy}: no selection"}
    best, refit = _refitted(run, best, selection, refit_on)
    best = _stamped(run, best)
    run.folder.write_prompt(best)
    details = {**run.searcher.details(run.ctx, run.state), **refit}
    selection_n = len(_selection_examples(run)) if decided is None else decided.n

    final = Evaluator(lm, data.task, majority_label=data.protocol.get("majority_label"))
    dev, test = data.dev, data.test
    base_dev, base_test = manual_baseline(final, manual, dev), manual_baseline(final, manual, test, progress)
    found_dev, found_test = ((base_dev, base_test) if best.fingerprint == manual.fingerprint
                             else (final.score(best, dev), final.score(best, test, progress=progress)))
    deltas = {"dev": bootstrap_delta(found_dev, base_dev, seed=spec.seed),
              "test": bootstrap_delta(found_test, base_test, seed=spec.seed)}
    warnings = run.warnings + _end_warnings(run, deltas)
    start = run.ctx.warm_start
    if start is not None:  # the gain over the prompt the search built on, beside the gain over manual
        start_dev, start_test = (
            (base_dev, base_test) if start.fingerprint == manual.fingerprint
            else (found_dev, found_test) if start.fingerprint == best.fingerprint
            else (final.score(start, dev), final.score(start, test, progress=progress)))
        extra_start: dict[str, Any] = {"start": {
            "path": spec.start, "fingerprint": start.fingerprint, "dev": start_dev.score, "test": start_test.score,
            "deltas": {"dev": bootstrap_delta(found_dev, start_dev, seed=spec.seed),
                       "test": bootstrap_delta(found_test, start_test, seed=spec.seed)}}}
    else:
        extra_start = {}
    trigger_ids = list(best.trigger_ids)
    return RunRecord(
        task=data.task.name, strategy=spec.strategy,
        variant=variant(spec.strategy, spec.params) + (f" from {start.fingerprint[:8]}" if start is not None else "")
        + (f" {run.dtype}" if run.dtype != "fp32" else ""),
        model=lm.name, seed=spec.seed, shots=spec.shots, data_seed=spec.data_seed, params=spec.params,
        metric=data.task.metric, prompt=best.to_json(), prompt_fingerprint=best.fingerprint,
        prompt_text=best.template.render({f: "{" + f + "}" for f in data.task.fields}),
        triggers=[lm.decode([i]) for i in trigger_ids],
        trigger_text=lm.decode(trigger_ids) if trigger_ids else "",
        calibration=best.calibration.method,
        scores=DevTest(found_dev.score, found_test.score),
        baseline=Baseline(base_dev.score, base_test.score, manual.template.source, manual.fingerprint),
        deltas=deltas, selection=selection_json,
        budget=Spent(**run.budget.to_json()), steps=run.steps, details=details, warnings=warnings,
        backbone=Backbone(run.backbone_before, backbone_after, backbone_after == run.backbone_before,
                          isinstance(lm, GradientModel) and any(p.requires_grad for p in lm.model.parameters())),
        wall_s=round(time.perf_counter() - run.started + run.elapsed_before, 2),
        split_sizes={"train": len(data.train), "dev": len(dev), "test": len(test), "selection": selection_n},
        protocol=data.protocol, versions=versions(), run_dir=str(run.folder.path),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_licence=lm.licence, search_dtype=run.dtype, **data.task.kind_spec.search_fields(found_test, base_test),
        # the optional fields, each where it applies: start, generation, members
        **extra_start, **_generation_summary(run, final, found_test, base_test, test),
        **_members(run, best, found_test, progress),
    )


def _members(run: SearchRun, best: AnyPrompt, found_test: EvalResult, progress: bool) -> dict[str, Any]:
    """A task set's members, each scored on its own test: the found prompt next to the member's own
    manual prompt, with the paired-bootstrap delta (nothing for a single task).

    The set's test is its members' tests in member order, each example tagged with its member (so a
    per-task part already scored it), and the members share labels and metric: a classification
    set's found scores are sliced from ``found_test``, not scored again."""
    out = {}
    start = 0
    for member in run.data.members:
        final = Evaluator(run.lm, member.task)
        manual = member.task.default_prompt
        base = manual_baseline(final, manual, member.test, progress)
        rows = torch.arange(start, start + len(member.test))
        start += len(member.test)
        if best.fingerprint == manual.fingerprint:
            found = base
        elif not member.task.kind_spec.generates:
            found = found_test.subset(rows)
        else:  # generation: ROUGE-L and the likelihood summary are not kept per example
            own = best.for_task(member.task.name) if isinstance(best, Prompt) else best  # its per-task part, if any
            found = final.score(own, member.test, progress=progress)
        out[member.task.name] = {"test": found.score, "manual_test": base.score, "n": found.n,
                                 "manual_template": manual.template.source,
                                 "delta": bootstrap_delta(found, base, seed=run.spec.seed)}
    return {"members": out} if out else {}


def _generation_summary(run: SearchRun, final: Evaluator, found: EvalResult, base: EvalResult,
                        test: Sequence[Example]) -> dict[str, Any]:
    """A generation run's ROUGE-L and likelihood next to the manual prompt's, the decoding, and
    the test outputs (written to ``outputs.test.jsonl`` in the run folder); nothing otherwise."""
    if found.outputs is None or base.outputs is None:
        return {}
    rows = [{"input": dict(ex.fields), "output": out, "manual_output": manual, "references": list(ex.targets)}
            for ex, out, manual in zip(test, found.outputs, base.outputs, strict=True)]
    path = run.folder.path / "outputs.test.jsonl"
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    return {"generation": {"found": found.extra, "baseline": base.extra, "decoding": final.decoding.to_json(),
                           "outputs": str(path)}}


def _selection_examples(run: SearchRun) -> list[Example]:
    """Dev and every train example the strategy did not fit on."""
    fitted = {id(ex) for ex in run.searcher.fitted(run.ctx, run.state)}
    return run.data.dev + [ex for ex in run.data.train if id(ex) not in fitted]


def _end_warnings(run: SearchRun, deltas: dict[str, dict[str, float]]) -> list[str]:
    out = []
    gap_se = (deltas["dev"]["se"] ** 2 + deltas["test"]["se"] ** 2) ** 0.5
    if deltas["dev"]["delta"] - deltas["test"]["delta"] > 2 * gap_se > 0:
        out.append(f"dev and test disagree: the found prompt gains {deltas['dev']['delta']:+.4f} on dev but "
                   f"{deltas['test']['delta']:+.4f} on test, more than 2 standard errors apart; it is fitted to dev")
    if run.steps == 0 and not run.state.get("done"):
        ended_by = "time limit" if run.budget.exhausted and run.budget.remaining > 0 else "budget"
        out.append(f"0 search steps: the {ended_by} ended the search before its first step; the result is the "
                   "starting prompt, gated")
    return out


# The manual baseline scores the same in every run on a split: a process that runs many searches
# (a benchmark suite, a tuning worker) scores it once per model, task and examples.
_baselines: weakref.WeakKeyDictionary[ScoringModel, dict[tuple[Any, ...], EvalResult]] = weakref.WeakKeyDictionary()


def manual_baseline(final: Evaluator, manual: Prompt, examples: Sequence[Example], progress: bool = False
                    ) -> EvalResult:
    """The manual prompt's score on ``examples``, computed once per model, task and examples."""
    task = final.task
    key = (task.name, task.metric, tuple(task.labels), final.majority_label, manual.fingerprint,
           examples_fingerprint(examples))
    known = _baselines.setdefault(final.lm, {})
    if key not in known:
        known[key] = final.score(manual, examples, progress=progress)
    return known[key]

