"""Cross-fitting: every labelled example as evidence for a pipeline's gate, where dev is small.

Train and dev together are split into two stratified folds; the stages run on each fold (its own
fit and check parts, `autoprompt.search.stages.split_train`), and the gate weighs each fold's prompt
on the *other* fold, pooled against the start (`out_of_fold_gate`): each example is scored by a
prompt that never saw it, and the gate has twice dev's examples. Passed, the folds' ensemble is
reported: the prompts the gate judged, with their fitted statistics (centroids, calibration priors)
re-estimated on all the labelled examples (``refit``, `autoprompt.search.finish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from autoprompt.prompts import AnyPrompt, Prompt, load_prompt
from autoprompt.results.record import Interrupted, RunRecord
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.final_gate import Pipeline, ensemble_of, final_record
from autoprompt.search.selection import Objective, Selection, objective_values, paired_gain
from autoprompt.search.stages import PipelineSettings, StageRunner, split_train, stage_data
from autoprompt.tasks.base import Example, TaskData


def run_crossfit(runner: StageRunner, data: TaskData, settings: PipelineSettings, start: Prompt | None,
                 before: str, spent: int, started: float) -> RunRecord | Interrupted:
    """The stages on each fold, then the out-of-fold gate; the finished run (or where a stage was
    interrupted: ``--resume`` continues inside it)."""
    spec, folder, lm = runner.spec, runner.folder, runner.lm
    labelled = data.train + data.dev
    one, two = split_train(labelled, 0.5, spec.seed + 1)
    total = runner.plan["total_budget"]
    reference = start or data.task.default_prompt
    found: list[AnyPrompt] = []
    summaries: list[dict[str, Any]] = []
    for k, own in enumerate((one, two), 1):
        fit, check = split_train(own, settings.holdout, spec.seed)
        fold_total = spent + (total - spent) // (3 - k)  # half of what is left, then the rest
        fold = runner.run(stage_data(data, fit, check), folder.path / "stages" / f"fold{k}", fold_total, spent,
                          tag=f" of fold {k}")
        if isinstance(fold, Interrupted):
            return fold
        spent += sum(int(s["budget"]["used"]) for s in fold)
        summaries += [{**s, "fold": k} for s in fold]
        found.append(load_prompt(Path(fold[-1]["run_dir"]) / "prompt.json"))
    decided = out_of_fold_gate(Evaluator(lm, data.task), found, (two, one), reference, settings,
                                "start prompt" if start is not None else "manual prompt")
    protocol = {"crossfit": True, "folds": [len(one), len(two)], "holdout": settings.holdout,
                "final_gate_on": f"out of fold, {len(labelled)} labelled examples (train and dev)"}
    pipeline = Pipeline(spec, data, lm, folder, settings, protocol, runner.plan)
    result = final_record(pipeline, [decided.chosen], summaries, start, before, started, runner.progress, decided,
                          seen=labelled)
    runner.folder.write_result(result.to_json())
    return result


def out_of_fold_gate(ev: Evaluator, found: list[AnyPrompt], others: tuple[list[Example], list[Example]],
                      reference: Prompt, settings: PipelineSettings, against: str) -> Selection:
    """The core's paired gate on out-of-fold objective values: fold k's prompt on the other fold's
    examples, pooled, against ``reference`` on the same examples; passed, the folds' ensemble is chosen."""
    objective = cast(Objective, settings.objective)
    mine, base = [], []
    for prompt, examples in zip(found, others, strict=True):
        scored, ref = ev.score_many([prompt, reference], examples)
        mine.append(objective_values(scored, objective))
        base.append(objective_values(ref, objective))
    values, reference_values = torch.cat(mine), torch.cat(base)
    gain, se = paired_gain(values, reference_values)
    n = len(values)
    distinct = list({p.fingerprint: p for p in found if p.fingerprint != reference.fingerprint}.values())
    chosen: AnyPrompt = ensemble_of(distinct, "cross-fitted folds") or (distinct[0] if distinct else reference)
    passed = bool(distinct) and gain > 0 and gain > settings.min_gain * se
    rows = [{"fingerprint": p.fingerprint, "template": p.template.source, "fold": k + 1, "manual": False,
             "objective": round(float(v.mean()), 6), "prompt": p.to_json()} for k, (p, v) in enumerate(zip(
                 found, mine, strict=True))]
    if passed:
        message = (f"found prompts beat the {against} out of fold on {n} labelled examples: {gain:+.4f} "
                   f"{objective} ({gain / se:.1f} paired standard errors); reporting the folds' ensemble")
        return Selection(chosen, True, chosen, gain, se, n, objective, settings.min_gain, rows, message, against)
    message = (f"no reliable improvement found: out of fold the found prompts gain {gain:+.4f} {objective} ± "
               f"{se:.4f} over the {against} on {n} labelled examples, within {settings.min_gain:g} standard "
               f"error(s); reporting the {against}")
    return Selection(reference, False, chosen, gain, se, n, objective, settings.min_gain, rows, message, against)
