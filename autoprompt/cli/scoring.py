"""Commands that score a given prompt: evaluate, predict, transfer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from autoprompt.cli.common import (
    AsJson,
    BatchSize,
    DataDir,
    DataSeed,
    Db,
    DeviceMap,
    Dtype,
    MaxNewTokens,
    Model,
    NumBeams,
    Shots,
    app,
    err,
    friendly,
    out,
    print_json,
)


@app.command()
@friendly
def evaluate(
    task: Annotated[str, typer.Option(help="Task name (sst2, rte, lama:P19, lama) or a task .toml file.")],
    template: Annotated[str | None, typer.Option(help="Template, e.g. '{sentence} It was [P]'.")] = None,
    verbalizer: Annotated[
        str | None, typer.Option(help='Label words as JSON, e.g. \'{"0": ["bad"], "1": ["good"]}\'.')
    ] = None,
    prompt: Annotated[Path | None, typer.Option(help="A prompt.json artifact to score instead.")] = None,
    model: Model = "smollm2-135m",
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    shots: Shots = None,
    data_seed: DataSeed = 13,
    limit: Annotated[int | None, typer.Option(
        min=1, help="Score a seeded, class-stratified sample of N examples (data files are often sorted by "
                    "label, so never the first N).")] = None,
    batch_size: BatchSize = 32,
    calibration: Annotated[str | None, typer.Option(
        help="Calibrate the prompt: none, contextual (content-free inputs, Zhao et al. 2021) or prior (mean class "
             "distribution over the task's train inputs); default: the prompt's own.")] = None,
    rule: Annotated[str | None, typer.Option(
        help="Decision rule: direct (label-word probability), channel (the input's likelihood after each label, "
             "Min et al. 2022; causal LMs) or centroid (nearest class centroid of the hidden state at [P], fitted on "
             "the task's train examples; Cho et al. 2025); default: the prompt's own.")] = None,
    num_beams: NumBeams = 1,
    max_new_tokens: MaxNewTokens = 64,
    data_dir: DataDir = None,
    dtype: Dtype = "fp32",
    device_map: DeviceMap = None,
    as_json: AsJson = False,
) -> None:
    """Score a prompt (the task's manual prompt by default) on one split.

    On a generation task (e2e) the outputs are decoded and scored by corpus BLEU and ROUGE-L against
    every reference; --json lists each input's output.
    """
    from autoprompt.api import evaluate as run  # noqa: PLC0415

    result = run(task, template=template, verbalizer=verbalizer, prompt=prompt, model=model, split=split,
                 shots=shots, data_seed=data_seed, limit=limit, batch_size=batch_size, data_dir=data_dir,
                 progress=True, calibration=calibration, rule=rule, num_beams=num_beams,
                 max_new_tokens=max_new_tokens, dtype=dtype, device_map=device_map)
    if as_json:
        return print_json(result)
    rows = result.get("relations", [result])
    table = Table("task", "split", "n", "metric", "score", "extra")
    for r in rows:
        figures = {k: v for k, v in (r.get("lama") or r.get("generation") or {}).items() if k != "decoding"}
        extra = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        table.add_row(r["task"], r["split"], str(r["n"]), r["metric"], f"{r['score']:.4f}", extra)
    if "relations" in result:
        table.add_row("lama (mean)", result["split"], str(result["n"]), "P@1", f"{result['score']:.4f}", "")
    out.print(table)
    if "template" in result:
        words = result["verbalizer"]
        shown = (json.dumps(words) if len(words) <= 8  # LAMA has hundreds of candidate objects
                 else f"{len(words)} labels, e.g. {json.dumps(dict(list(words.items())[:3]))}")
        out.print(f"template: {result['template']!r}  verbalizer: {shown}  "
                  f"calibration: {result['calibration']['method']}  "
                  f"rule: {result.get('rule', {}).get('name', 'direct')}", highlight=False)
    out.print(f"model {result['model']}, {result['wall_s']:.1f} s", highlight=False)
    return None


@app.command()
@friendly
def predict(
    prompt: Annotated[Path, typer.Option(help="A prompt.json artifact (discrete, soft or ensemble).")],
    input_file: Annotated[Path, typer.Option("--input", help="JSONL, one object per line with the template's fields.")],
    model: Annotated[str | None, typer.Option(help="Backbone (default: the one the prompt was searched on).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write JSONL here (atomically) instead of stdout.")] = None,
    batch_size: BatchSize = 32,
    num_beams: NumBeams = 1,
    max_new_tokens: MaxNewTokens = 64,
    member: Annotated[str | None, typer.Option(
        help="A task set's prompt with per-task parts (task_tokens): the member task the inputs belong to.")] = None,
) -> None:
    """Label new inputs with a saved prompt: one JSON line per input with its label and probabilities
    (a generation prompt: with its generated `output`)."""
    from autoprompt.api import predict as run  # noqa: PLC0415
    from autoprompt.io import atomic_write_bytes, check_writable_file  # noqa: PLC0415

    if output is not None:
        check_writable_file(output, "--output")
    rows = run(prompt, input_file, model=model, batch_size=batch_size, progress=output is not None,
               num_beams=num_beams, max_new_tokens=max_new_tokens, member=member)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(output, text.encode())
        err.print(f"{len(rows)} predictions written to {output}", highlight=False)


@app.command()
@friendly
def transfer(
    prompt: Annotated[Path, typer.Option(help="A found prompt.json (in its run folder: the run's task, shots, data "
                                              "seed and test sample are used).")],
    model: Annotated[str, typer.Option(help="The model to score it on (see `autoprompt models`).")],
    task: Annotated[str | None, typer.Option(help="Task (default: the run's, else the prompt's metadata).")] = None,
    split: Annotated[str, typer.Option(help="The split scored: test (recorded in the leaderboard) or dev.")] = "test",
    source_model: Annotated[str | None, typer.Option(
        help="The model the prompt was found on (default: the prompt's metadata).")] = None,
    record: Annotated[bool, typer.Option(help="Write the result under the run folder and record a leaderboard row "
                                              "that names the source model.")] = True,
    data_dir: DataDir = None,
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Score a prompt found on one model on another, next to that model's own manual prompt.

    Triggers are carried as their decoded text (the target re-tokenizes it); a soft prompt is carried
    by its nearest source tokens as a hard prompt (a deep prefix cannot transfer); a calibration is
    re-estimated on the target.
    """
    from autoprompt.api import transfer as run  # noqa: PLC0415

    result = run(prompt, model, task=task, split=split, source_model=source_model, data_dir=data_dir, db=db,
                 record=record, progress=True)
    if as_json:
        return print_json(result)
    table = Table("task", "split", "n", "source model", "model", "strategy", "found", "manual", "gain")
    gain = result["gain"]
    table.add_row(result["task"], result["split"], str(result["n"]), result["source_model"], result["model"],
                  result["strategy"], f"{result['score']:.4f}", f"{result['manual_score']:.4f}",
                  f"{gain['delta']:+.4f} [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]")
    out.print(table)
    out.print(f"carried prompt: {result['template']!r}", highlight=False)
    for note in result["notes"]:
        out.print(f"note: {note}", highlight=False)
    if result.get("run_dir"):
        out.print(f"written to {result['run_dir']} ({'recorded' if result['recorded'] else 'already'} in the "
                  "leaderboard)", highlight=False)
    return None
