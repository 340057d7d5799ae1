"""Prompt transfer: a prompt found on one model, scored on another through the same evaluator.

What a prompt is made of does not all belong to its model:

* template text, label words and demonstrations are text: they carry as they are (a label word
  the target's tokenizer cannot represent is a one-line error, as everywhere);
* trigger tokens are ids of the *source* vocabulary: each is decoded to the text the source model
  read and that text joins the template, so the target tokenizes it its own way;
* a soft prompt's ``[S]`` vectors live in the source's embedding space: they are carried by their
  nearest source tokens' text, as a hard prompt (the result says so: what is scored is that
  readout, not the vectors);
* a deep key/value prefix lives in the source's layers and has no text: it does not transfer, and
  neither does a classification head (``head=linear``), which reads the source's hidden states;
* a calibration is a class bias measured on the source: its *method* carries and the bias is
  re-estimated on the target.

`transfer` scores the carried prompt and the target's own manual prompt on the same examples (the
source run's task, shots, data seed and test sample) and records the result as a leaderboard row of
the target model that names where the prompt was found (``source_model``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoprompt.backends import FrozenLM, ScoringModel
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_json, path_part, read_user_json
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt, Segment, Template, load_prompt, save_prompt
from autoprompt.prompts.soft import resolve_soft
from autoprompt.results import leaderboard as lb
from autoprompt.results.record import Baseline, DevTest, RunRecord, Spent
from autoprompt.results.recording import leaderboard_db
from autoprompt.results.versions import versions
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.finish import manual_baseline
from autoprompt.search.loop import limit_test
from autoprompt.search.runs import SearchSpec
from autoprompt.search.selection import bootstrap_delta
from autoprompt.tasks import load_task


@dataclass(frozen=True)
class Carried:
    """A prompt rewritten so another model can read it, and what was changed on the way."""

    prompt: AnyPrompt
    notes: tuple[str, ...]


def carry(prompt: AnyPrompt, source: FrozenLM) -> Carried:
    """``prompt`` with everything that belongs to ``source`` turned into text (see the module docstring).

    Raises:
        AutopromptError: the prompt has a deep key/value prefix, which has no text form.
    """
    if isinstance(prompt, Ensemble):
        carried = [_carry_one(m, source) for m in prompt.members]
        notes = tuple(dict.fromkeys(n for _, member_notes in carried for n in member_notes))
        return Carried(Ensemble(tuple(p for p, _ in carried), prompt.weights, prompt.meta), notes)
    single, single_notes = _carry_one(prompt, source)
    return Carried(single, tuple(single_notes))


def _carry_one(prompt: Prompt, source: FrozenLM) -> tuple[Prompt, list[str]]:
    notes: list[str] = []
    soft = resolve_soft(prompt.soft)
    if soft is not None and soft.head is not None:
        raise AutopromptError(f"this prompt's classification head reads {source.name}'s hidden states and has no "
                              "label words to carry; transfer a prompt trained with head=verbalizer")
    if soft is not None and soft.prefix is not None:
        raise AutopromptError(f"this prompt's deep key/value prefix lives in {source.name}'s layers and has no text "
                              "form, so it cannot be scored on another model; transfer a discrete prompt or a "
                              "prompt-tuning / P-tuning one")
    nearest: list[int] = []
    if soft is not None and soft.slots is not None:
        source.check_triggers(prompt)
        nearest = soft.nearest(source.embedding_matrix(), k=1)[1][:, 0].tolist()  # [S] ids
        notes.append(f"the {soft.num_slots} soft vectors are carried by their nearest {source.name} tokens as a "
                     "hard prompt (the vectors themselves belong to the source's embedding space)")
    if prompt.trigger_ids:
        source.check_triggers(prompt)
        notes.append(f"the {len(prompt.trigger_ids)} trigger tokens are carried as their decoded {source.name} text "
                     "and re-tokenized by the target")
    triggers, slots = iter(prompt.trigger_ids), iter(nearest)
    segments = []
    for seg in prompt.template.segments:
        if seg.kind == "trigger":  # the source read the token itself, not the slot's whitespace
            segments.append(Segment("text", source.decode([next(triggers)])))
        elif seg.kind == "soft":
            segments.append(Segment("text", source.decode([next(slots)])))
        else:
            segments.append(seg)
    if prompt.calibration.active:
        notes.append(f"calibration '{prompt.calibration.method}' is re-estimated on the target")
    if prompt.rule.name == "centroid":  # hidden states of another model: its centroids mean nothing here
        notes.append("rule 'centroid': the class centroids are re-fitted on the target's train examples")
    meta = {**prompt.meta, "transferred_from": source.name}
    return Prompt(Template.from_segments(_merged(segments)), prompt.verbalizer, (), None, meta,
                  prompt.calibration, prompt.demos, prompt.rule.unfitted()), notes


def _merged(segments: Sequence[Segment]) -> list[Segment]:
    """Adjacent text segments joined into one (a re-parse would join them too; this keeps it explicit)."""
    out: list[Segment] = []
    for seg in segments:
        if seg.kind == "text" and out and out[-1].kind == "text":
            out[-1] = Segment("text", out[-1].value + seg.value)
        else:
            out.append(seg)
    return out


def transfer(prompt_path: str | Path, model: str | ScoringModel, *, task: str | None = None, split: str = "test",
             source_model: str | ScoringModel | None = None, data_dir: str | Path | None = None,
             db: str | Path | None = None, record: bool = True, progress: bool = False) -> dict[str, Any]:
    """Score a found prompt on another model, next to that model's own manual prompt.

    Args:
        prompt_path: a ``prompt.json``; when it lies in a run folder, the run's task, shots, data
            seed and test sample are used, so the scores compare with the source run's.
        model: the target model (a name, or a loaded backend).
        task: the task (default: the run's, else the prompt's metadata).
        split: the split scored for ``score`` (dev is scored too, for the leaderboard).
        source_model: the model the prompt was found on (default: the prompt's metadata).
        data_dir: the local data folder.
        db: the leaderboard (default: the source run's, as `autoprompt search` records).
        record: write the transfer under the run folder and record it in the leaderboard.
        progress: show progress bars.

    Returns:
        task, split, n, model, source_model, strategy, score, manual_score, gain (paired bootstrap
        delta), dev scores, the carried prompt and the notes on what was carried how.
    """
    started = time.perf_counter()
    path = Path(prompt_path)
    prompt = load_prompt(path)
    spec = SearchSpec.load(path.parent) if (path.parent / "spec.json").is_file() else None
    task_name = task or (spec.task if spec else None) or prompt.meta.get("task")
    if not task_name:
        raise AutopromptError(f"{path} names no task and lies in no run folder; give its `task`")
    source = source_model or prompt.meta.get("model") or (spec.model if spec else None)
    if source is None:
        raise AutopromptError(f"{path} does not say which model it was found on; give `source_model`")
    source_lm = _backend(source) if _needs_source(prompt) else None
    source_name = source_lm.name if source_lm else source if isinstance(source, str) else source.name
    carried = carry(prompt, source_lm) if source_lm else Carried(prompt.with_meta({"transferred_from": source_name}),
                                                                  ())
    target = _backend(model)
    shots, data_seed = (spec.shots, spec.data_seed) if spec else (None, 13)
    data = load_task(task_name, data_dir, shots, data_seed, target.name)
    if spec is not None and spec.test_limit is not None:
        data = limit_test(data, spec.test_limit)
    evaluator = Evaluator(target, data.task, majority_label=data.protocol.get("majority_label"))
    chosen = carried.prompt
    chosen = evaluator.fit_unfitted(chosen, data.train)
    if chosen.calibration.active:
        method = chosen.calibration.method
        chosen = evaluator.calibrate([chosen], method, data.train if method == "prior" else None)[0]
    manual = data.task.default_prompt
    scored = {name: (evaluator.score(chosen, data.split(name), progress=progress),
                     manual_baseline(evaluator, manual, data.split(name), progress))
              for name in dict.fromkeys(("dev", split))}
    found, base = scored[split]
    delta = bootstrap_delta(found, base, seed=spec.seed if spec else 0)
    strategy = (spec.strategy if spec else None) or str(prompt.meta.get("strategy") or "unknown")
    out: dict[str, Any] = {
        "task": data.task.name, "split": split, "n": found.n, "model": target.name, "source_model": source_name,
        "strategy": strategy, "metric": found.metric, "score": found.score, "manual_score": base.score,
        "gain": delta, "dev": {"score": scored["dev"][0].score, "manual_score": scored["dev"][1].score},
        "template": chosen.template.source, "manual_template": manual.template.source, "notes": list(carried.notes),
        "shots": shots, "data_seed": data_seed, "protocol": data.protocol, "model_licence": target.licence,
        "wall_s": round(time.perf_counter() - started, 2), "versions": versions(),
    }
    if record and spec is not None and split == "test":
        out.update(_record(path.parent, spec, chosen, out, scored, db))
    return out


def _needs_source(prompt: AnyPrompt) -> bool:
    members = prompt.members if isinstance(prompt, Ensemble) else (prompt,)
    return any(m.trigger_ids or m.soft is not None for m in members)


def _backend(model: str | ScoringModel) -> FrozenLM:
    lm = load_model(model) if isinstance(model, str) else model
    if not isinstance(lm, FrozenLM):  # carrying reads tokenizers and embeddings on both sides
        raise AutopromptError(f"transfer carries prompts between transformers models; {lm.name} is a "
                              f"{type(lm).__name__}")
    return lm


def _record(run_dir: Path, spec: SearchSpec, chosen: AnyPrompt, out: dict[str, Any],
            scored: dict[str, Any], db: str | Path | None) -> dict[str, Any]:
    """Write ``<run>/transfers/<run>.to-<model>/`` (prompt.json, result.json) and record its row."""
    source_result = run_dir / "result.json"
    variant = spec.strategy
    if source_result.is_file():
        variant = RunRecord.from_json(read_user_json(source_result, "result file")).variant or variant
    # a model name may be a path ("../.."): never a path part as given
    folder = run_dir / "transfers" / f"{run_dir.name}.to-{path_part(str(out['model']), 'model')}"
    save_prompt(chosen, folder / "prompt.json")
    (found_dev, base_dev), (found_test, base_test) = scored["dev"], scored["test"]
    record = RunRecord(
        task=out["task"], strategy=spec.strategy, variant=f"{variant} (from {out['source_model']})",
        model=out["model"], seed=spec.seed, shots=spec.shots, data_seed=spec.data_seed, params=spec.params,
        metric=out["metric"], prompt=chosen.to_json(), prompt_fingerprint=chosen.fingerprint,
        prompt_text=chosen.template.render({f: "{" + f + "}" for f in chosen.template.fields}), triggers=[],
        trigger_text="", calibration=chosen.calibration.method,
        scores=DevTest(found_dev.score, found_test.score),
        baseline=Baseline(base_dev.score, base_test.score, out["manual_template"], ""),
        deltas={"dev": bootstrap_delta(found_dev, base_dev, seed=spec.seed), "test": out["gain"]},
        selection={"reliable": None, "message": f"transferred from {out['source_model']}: no selection on the target"},
        budget=Spent(0, 0, 0, None), steps=0, details={"transfer": {"source_run": str(run_dir),
                                                                    "notes": out["notes"]}},
        warnings=[], backbone=None, wall_s=out["wall_s"],
        split_sizes={"dev": found_dev.n, "test": found_test.n}, protocol=out["protocol"], versions=out["versions"],
        run_dir=str(folder), finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_licence=out["model_licence"], source_model=out["source_model"],
    )
    atomic_write_json(folder / "result.json", record.to_json())
    recorded = lb.record(record, leaderboard_db(db, spec.out))
    return {"run_dir": str(folder), "recorded": recorded}
