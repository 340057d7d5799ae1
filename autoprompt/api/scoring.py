"""The API's scoring side: score a prompt on a split, label new inputs, list the tasks."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import DEFAULT_MODEL
from autoprompt.backends.decoding import Decoding
from autoprompt.backends.precision import resolve_dtype
from autoprompt.backends.store import check_device_map, load_model
from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt, Template, Verbalizer, load_prompt
from autoprompt.prompts.soft import resolve_soft
from autoprompt.results.versions import versions
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.tasks import Example, Task, TaskData, lama_relations, load_task, resolve_data_dir
from autoprompt.tasks.base import stratified_sample
from autoprompt.tasks.readers import read_inputs


def build_prompt(data: TaskData, template: str | None = None,
                 verbalizer: str | Mapping[str, str | Sequence[str]] | None = None,
                 prompt: str | Path | AnyPrompt | None = None) -> AnyPrompt:
    """The prompt to score: a prompt file, else the task's default with ``template``/``verbalizer`` overrides."""
    if prompt is not None:
        if template is not None or verbalizer is not None:
            raise AutopromptError("give either `prompt` or `template`/`verbalizer`, not both")
        chosen = prompt if isinstance(prompt, Prompt | Ensemble) else load_prompt(prompt)
        # a task set's prompt on one of its members: that member's own part
        if isinstance(chosen, Prompt) and data.task.name in chosen.task_names:
            return chosen.for_task(data.task.name)
        return chosen
    base = data.task.default_prompt
    tpl = Template(template) if template is not None else base.template
    if verbalizer is None:
        verb = base.verbalizer
    else:
        verb = Verbalizer.parse(verbalizer) if isinstance(verbalizer, str) else Verbalizer(verbalizer)
    return Prompt(tpl, verb)


def evaluate(
    task: str | Path,
    *,
    template: str | None = None,
    verbalizer: str | Mapping[str, str | Sequence[str]] | None = None,
    prompt: str | Path | AnyPrompt | None = None,
    model: str | ScoringModel = DEFAULT_MODEL,
    split: str = "test",
    shots: int | None = None,
    data_seed: int = 13,
    limit: int | None = None,
    batch_size: int = 32,
    data_dir: str | Path | None = None,
    progress: bool = False,
    calibration: str | None = None,
    num_beams: int = 1,
    max_new_tokens: int = 64,
    rule: str | None = None,
    dtype: str = "fp32",
    device_map: str | None = None,
) -> dict[str, Any]:
    """Score one prompt on one split of a task.

    Args:
        task: task name (``sst2``, ``lama:P19``, ``lama`` for all relations) or a task TOML path.
        template: a template overriding the task's default.
        verbalizer: label words (JSON text or a mapping) overriding the default.
        prompt: a ``prompt.json`` (or `Prompt`) to score instead.
        model: model name, or an already loaded backend.
        split: ``train``, ``dev`` or ``test``.
        shots: k-shot protocol (16: LM-BFF), None for the full data.
        data_seed: which k-shot split.
        limit: score a seeded, class-stratified sample of ``limit`` examples.
        batch_size: examples per forward.
        data_dir: the local data folder (default ``AUTOPROMPT_DATA_DIR``).
        progress: show a progress bar.
        calibration: ``none``, ``contextual`` or ``prior`` (estimated on the task's train inputs,
            labels unused) to (re-)calibrate the prompt; None keeps the prompt's own calibration.
        num_beams: generation tasks: 1 decodes greedily, more runs beam search.
        max_new_tokens: generation tasks: the most tokens generated per input.
        rule: ``direct``, ``channel`` or ``centroid`` (fitted on the task's train examples) to read the
            prompt's class scores by that decision rule (`Rule`); None keeps the prompt's own.
        dtype: what the model computes in: ``fp32`` (default, what every reported figure uses), ``bf16``,
            or ``auto`` (bf16 where the hardware computes it natively); said in the result.

    Returns:
        A JSON-able dict: task, split, model, n, metric, score, template, verbalizer, calibration, rule, per-class
        counts, LAMA extras, protocol, wall time and versions. For ``lama``: one entry per relation
        plus their mean. For a generation task: ``generation`` (ROUGE-L, the references' per-token
        log-likelihood, the decoding) and ``outputs`` (input, output, references per example).
    """
    if limit is not None and limit < 1:
        raise AutopromptError(f"limit {limit} leaves nothing to score; give a positive number")
    resolve_dtype(dtype, "cpu")  # an unknown dtype is refused before any work
    check_device_map(device_map)
    if str(task).lower() == "lama":
        return _evaluate_lama_suite(template=template, verbalizer=verbalizer, prompt=prompt, model=model,
                                    split=split, limit=limit, batch_size=batch_size, data_dir=data_dir,
                                    progress=progress, calibration=calibration, rule=rule, dtype=dtype,
                                    device_map=device_map)
    started = time.perf_counter()
    data = load_task(task, data_dir, shots, data_seed, model if isinstance(model, str) else model.name)
    chosen = build_prompt(data, template, verbalizer, prompt)
    examples = data.split(split) if limit is None else stratified_sample(data.split(split), limit)
    lm = load_model(model, device_map=device_map) if isinstance(model, str) else model
    evaluator = Evaluator(lm, data.task, batch_size=batch_size, majority_label=data.protocol.get("majority_label"),
                          decoding=Decoding(num_beams, max_new_tokens))
    if rule is not None:
        method = chosen.calibration.method
        chosen = evaluator.fit_rule([chosen], rule, data.train)[0]
        calibration = calibration or method  # the prompt's prior belonged to its old rule: re-estimate it
    if calibration is not None:
        chosen = evaluator.calibrate([chosen], calibration, data.train if calibration == "prior" else None)[0]
    computed_in = resolve_dtype(dtype, lm.device)
    with lm.computing_in(computed_in):
        result = evaluator.score(chosen, examples, progress=progress)
    generated: dict[str, Any] = {}
    if result.outputs is not None:
        generated = {"generation": {**result.extra, "decoding": evaluator.decoding.to_json()},
                     "outputs": [{"input": dict(ex.fields), "output": text, "references": list(ex.targets)}
                                 for ex, text in zip(examples, result.outputs, strict=True)]}
    return {
        "task": data.task.name, "split": split, "model": lm.name, "model_licence": lm.licence,
        "n": result.n, "metric": result.metric,
        "score": result.score, **data.task.kind_spec.result_fields(result, data.task.labels), **generated,
        "template": chosen.template.source, "verbalizer": chosen.verbalizer.to_json(),
        "trigger_ids": list(chosen.trigger_ids), "prompt_fingerprint": chosen.fingerprint,
        "calibration": chosen.calibration.to_json(),
        "rule": _rule_summary(chosen), "dtype": computed_in,
        "shots": data.protocol.get("shots"), "data_seed": data.protocol.get("data_seed"),
        "protocol": data.protocol, "limit": limit,
        **({"sample": f"seeded class-stratified sample of {result.n}"} if limit is not None else {}),
        "wall_s": round(time.perf_counter() - started, 3), "versions": versions(),
    }


def _rule_summary(prompt: AnyPrompt) -> dict[str, Any]:
    """The decision rule's name and options (a centroid rule's centroids left out: they are in the prompt)."""
    rules = {json.dumps({k: v for k, v in m.rule.to_json().items() if k != "centroids"}, sort_keys=True)
             for m in (prompt.members if isinstance(prompt, Ensemble) else (prompt,))}
    return json.loads(rules.pop()) if len(rules) == 1 else {"name": "mixed"}


def predict(
    prompt: str | Path | AnyPrompt,
    inputs: str | Path | Sequence[Mapping[str, str]],
    *,
    model: str | ScoringModel | None = None,
    batch_size: int = 32,
    top: int = 5,
    progress: bool = False,
    num_beams: int = 1,
    max_new_tokens: int = 64,
    member: str | None = None,
) -> list[dict[str, Any]]:
    """Labels for new inputs under a saved prompt (discrete, soft or an ensemble), or the generated
    text under a generation prompt (one without label words).

    Args:
        prompt: a ``prompt.json`` artifact (its ``soft.safetensors`` beside it) or a prompt.
        inputs: a JSONL file, or rows, each holding the template's fields.
        model: the backbone (default: the model the prompt was searched on, from its metadata).
        batch_size: examples per forward.
        top: class probabilities reported per row (the most likely first).
        progress: show a progress bar.
        num_beams: generation: 1 decodes greedily, more runs beam search.
        max_new_tokens: generation: the most tokens generated per input.
        member: a task set's prompt with per-task parts (``task_tokens``): the member task whose
            part the inputs are scored with.

    Returns:
        Per input: its fields, the predicted ``label`` and the top class probabilities; for a
        generation prompt its fields and ``output``.
    """
    chosen = prompt if isinstance(prompt, Prompt | Ensemble) else load_prompt(prompt)
    if member and (isinstance(chosen, Ensemble) or not chosen.task_names):
        raise AutopromptError(f"the prompt has no per-task parts, so `member` ({member!r}) picks nothing; drop it")
    if isinstance(chosen, Prompt) and chosen.task_names:
        if member not in chosen.task_names:
            raise AutopromptError(f"the prompt has per-task parts for {', '.join(chosen.task_names)}; "
                                  f"pick the inputs' task with `member` (one of those), got {member!r}")
        chosen = chosen.for_task(member)
    fields = chosen.template.fields
    rows = read_inputs(inputs, fields) if isinstance(inputs, str | Path) else [dict(r) for r in inputs]
    soft = resolve_soft(chosen.soft) if isinstance(chosen, Prompt) else None
    head_labels = tuple((soft.meta or {}).get("labels", ())) if soft is not None and soft.head is not None else ()
    if isinstance(chosen, Prompt) and not chosen.verbalizer.labels and not head_labels:  # a generation prompt
        task = Task(str(chosen.meta.get("task", "predict")), fields, (), chosen.template.source, {}, "bleu",
                    kind="generation")
        lm = model if isinstance(model, ScoringModel) else load_model(model or chosen.meta.get("model")
                                                                      or DEFAULT_MODEL)
        scorer = Evaluator(lm, task, batch_size=batch_size, cache=False, decoding=Decoding(num_beams, max_new_tokens))
        assert scorer.generation is not None  # a generation task's evaluator has its scorer
        texts = scorer.generation.generate(chosen, [Example({f: r[f] for f in fields}, 0) for r in rows], progress)
        return [{**row, "output": text} for row, text in zip(rows, texts, strict=True)]
    labels = chosen.verbalizer.labels or head_labels  # a classification head names its classes
    task = Task(str(chosen.meta.get("task", "predict")), fields, labels, chosen.template.source,
                {label: list(chosen.verbalizer.words[label]) for label in chosen.verbalizer.labels})
    lm = model if isinstance(model, ScoringModel) else load_model(model or chosen.meta.get("model") or DEFAULT_MODEL)
    examples = [Example({f: r[f] for f in fields}, 0) for r in rows]  # labels unknown: never read
    result = Evaluator(lm, task, batch_size=batch_size, cache=False).score(chosen, examples, progress=progress)
    probs = result.logprobs.log_softmax(-1).exp()                                          # [N, C]
    broken = (~probs.isfinite().all(-1)).nonzero().flatten().tolist()
    if broken:  # never a NaN in the output (it is not JSON) nor a label picked from NaN scores
        raise AutopromptError(f"the prompt's class scores are not finite for input {broken[0] + 1} (and "
                              f"{len(broken) - 1} more): its soft part, calibration or rule holds NaN or infinite "
                              "values; rerun the search that made it")
    out = []
    for row, p in zip(rows, probs, strict=True):
        best = p.topk(min(top, len(labels)))
        out.append({**row, "label": labels[int(best.indices[0])],
                    "probs": {labels[int(i)]: round(float(v), 6) for v, i in zip(best.values, best.indices)}})
    return out


def _evaluate_lama_suite(*, template: str | None, verbalizer: Any, prompt: Any, model: str | ScoringModel, split: str,
                         limit: int | None, batch_size: int, data_dir: Any, progress: bool, calibration: str | None,
                         rule: str | None, dtype: str, device_map: str | None) -> dict[str, Any]:
    if template is not None or verbalizer is not None or prompt is not None:
        raise AutopromptError("`lama` runs each relation's own template; pick one relation (lama:P19) to override it")
    if calibration is not None or rule is not None:
        raise AutopromptError("`lama` ranks each relation's objects with its own prompt; pick one relation "
                              "(lama:P19) to set a calibration or a rule")
    root = resolve_data_dir(data_dir)
    if root is None:
        raise AutopromptError("LAMA needs the local data folder; set AUTOPROMPT_DATA_DIR or `data_dir`")
    lm = load_model(model, device_map=device_map) if isinstance(model, str) else model
    started = time.perf_counter()
    rows = [evaluate(f"lama:{rel}", model=lm, split=split, limit=limit, batch_size=batch_size,
                     data_dir=root, progress=progress, dtype=dtype) for rel in lama_relations(root)]
    mean = sum(r["score"] for r in rows) / len(rows)
    return {"task": "lama", "split": split, "model": lm.name, "n": sum(r["n"] for r in rows), "metric": "lama",
            "score": mean, "relations": rows, "limit": limit, "dtype": resolve_dtype(dtype, lm.device),
            "wall_s": round(time.perf_counter() - started, 3), "versions": versions()}


def describe_tasks(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per built-in task (plus the LAMA relations found locally)."""
    from autoprompt.tasks import BUILTIN, E2E_TASK  # noqa: PLC0415

    rows = [{"task": name, "labels": list(e.task.labels), "metric": e.task.metric, "shots": list(e.shots),
             "description": e.task.description, "data": e.task.availability, "template": e.task.template}
            for name, e in BUILTIN.items()]
    root = resolve_data_dir(data_dir)
    relations: Sequence[str] = lama_relations(root) if root is not None else ()
    rows.append({"task": "lama:<relation>", "labels": [], "metric": "lama", "shots": [],
                 "description": "LAMA T-REx fact retrieval; `lama` runs all relations",
                 "data": f"{len(relations)} relations: {' '.join(relations)}" if relations else "needs local data",
                 "template": "{subject} was born in [P] (per relation)"})
    rows.append({"task": E2E_TASK.name, "labels": [], "metric": E2E_TASK.metric, "shots": ["N training references"],
                 "description": E2E_TASK.description, "data": E2E_TASK.availability, "template": E2E_TASK.template})
    return rows
