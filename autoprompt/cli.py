"""The ``autoprompt`` command line: thin wrappers over `autoprompt.api`.

Errors in the input print one line (``error: ...``) and exit with code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from autoprompt.errors import AutopromptError

app = typer.Typer(
    name="autoprompt",
    help="Search, score and compare prompts for frozen language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn `AutopromptError` into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutopromptError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


DataDir = Annotated[Path | None, typer.Option(help="Local data folder (default: $AUTOPROMPT_DATA_DIR, else the hub).")]
Model = Annotated[str, typer.Option(help="Model alias, local folder or hub id (see `autoprompt models`).")]
Shots = Annotated[int | None, typer.Option(help="k-shot protocol: 16 reads LM-BFF's splits (32: FewGLUE).")]
DataSeed = Annotated[int, typer.Option(help="Which k-shot split (13/21/42/87/100), or the dev-slice seed.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
@friendly
def tasks(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """List the built-in tasks, their labels, metric, default prompt and what data exists locally."""
    from autoprompt.api import describe_tasks  # noqa: PLC0415 - keep `--help` fast

    rows = describe_tasks(data_dir)
    if as_json:
        return _print_json(rows)
    table = Table("task", "metric", "k-shot", "data available", "default template", show_lines=True)
    for r in rows:
        table.add_row(r["task"], r["metric"], ",".join(map(str, r["shots"])) or "-", r["data"], r["template"])
    out.print(table)
    return None


@app.command()
@friendly
def models(as_json: AsJson = False) -> None:
    """List model aliases and whether the offline default is already provisioned."""
    from autoprompt.model_store import list_models  # noqa: PLC0415

    rows = list_models()
    if as_json:
        return _print_json(rows)
    table = Table("alias", "kind", "source", "cached", "description")
    for r in rows:
        table.add_row(r["alias"], r["kind"], r["source"], r["cached"], r["description"])
    out.print(table)
    return None


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
    limit: Annotated[int | None, typer.Option(help="Score only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 32,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Score a prompt (the task's manual prompt by default) on one split."""
    from autoprompt.api import evaluate as run  # noqa: PLC0415

    result = run(task, template=template, verbalizer=verbalizer, prompt=prompt, model=model, split=split,
                 shots=shots, data_seed=data_seed, limit=limit, batch_size=batch_size, data_dir=data_dir,
                 progress=True)
    if as_json:
        return _print_json(result)
    rows = result.get("relations", [result])
    table = Table("task", "split", "n", "metric", "score", "extra")
    for r in rows:
        extra = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.get("lama", {}).items())
        table.add_row(r["task"], r["split"], str(r["n"]), r["metric"], f"{r['score']:.4f}", extra)
    if "relations" in result:
        table.add_row("lama (mean)", result["split"], str(result["n"]), "P@1", f"{result['score']:.4f}", "")
    out.print(table)
    if "template" in result:
        out.print(f"template: {result['template']!r}  verbalizer: {json.dumps(result['verbalizer'])}", highlight=False)
    out.print(f"model {result['model']}, {result['wall_s']:.1f} s", highlight=False)
    return None


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
