"""What every command shares: the app, one-line errors (`friendly`), option types, consoles."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from autoprompt.errors import AutopromptError

if TYPE_CHECKING:  # the run-time class of `_UsageError` under the typer installed here (>= 0.29)
    from typer._click.exceptions import UsageError

# user text (templates, label words, data, file names) is printed as written: never as rich markup
# ("[/]" in a template), emoji codes (":x:") or highlighting; our own styles are `Text` spans (`error_line`)
out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)


def error_line(message: str, label: str = "error:", style: str = "bold red") -> Text:
    """``error: <message>`` with only the label styled; the message is literal text."""
    return Text.assemble((label, style), " ", message)
F = TypeVar("F", bound=Callable[..., Any])


# click's UsageError, whichever click typer runs on (typer >= 0.29 vendors its own): BadParameter's parent
_UsageError = cast("type[UsageError]", typer.BadParameter.__mro__[1])


class _Commands(TyperGroup):
    """Usage errors (a bad option value, an unknown option) as one line and exit 2, like every other error."""

    # ignore: the base method is typed with click's Context; typer passes its own subclass, which this names
    ORDER = ("tasks", "models", "strategies", "evaluate", "predict", "search", "tune", "leaderboard", "report")

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        """``--help`` lists the commands in the order a user meets them, not in import order."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else len(self.ORDER))

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except _UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            err.print(error_line(f"{e.format_message()}{where}"), soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="autoprompt",
    help="Search, score and compare prompts for frozen language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
    rich_markup_mode=None,  # help texts are shown as written: "[param]", "[P]" are not markup
)
BatchSize = Annotated[int, typer.Option(min=1, help="Examples per forward pass.")]
NumBeams = Annotated[int, typer.Option(min=1, help="Generation tasks: 1 decodes greedily, more runs beam search.")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Generation tasks: the most tokens generated per input.")]


# the settings core errors name (in backticks) that are options of some command here
_FLAGS = {"data_dir", "data_seed", "seed", "data_seeds", "shots", "split", "limit", "prompt", "template", "verbalizer",
          "strategy", "storage", "study", "sampler", "pruner", "space", "test_limit", "budget", "model", "task",
          "member", "dtype", "device_map"}


_RENAMED = {"params": "--param", "resume": "--resume", "out": "--out"}


def _as_flag(name: str, value: str | None, is_param: bool) -> str | None:
    """A core error's ```data_seed``` as ``--data-seed``, a strategy's ```clip=1``` as ``--param clip=1``."""
    if is_param:
        return f"--param {name}" + (f"={value}" if value is not None else "")
    if name in _RENAMED:
        return _RENAMED[name] + (f"={value}" if value is not None else "")
    if name in _FLAGS:
        return f"--{name.replace('_', '-')}" + (f" {value}" if value is not None else "")
    return None


def friendly(fn: F) -> F:
    """Draw the core's progress and warnings; `AutopromptError` as one line on stderr and exit code 2;
    Ctrl-C as exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from autoprompt.cli.terminal import Terminal  # noqa: PLC0415
        from autoprompt.events import listening  # noqa: PLC0415 - keep `--help` fast

        try:
            with listening(Terminal()):
                return fn(*args, **kwargs)
        except AutopromptError as e:
            err.print(error_line(e.worded(_as_flag)), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


DataDir = Annotated[Path | None, typer.Option(help="Local data folder (default: $AUTOPROMPT_DATA_DIR, else the hub).")]
Model = Annotated[str, typer.Option(help="Model alias, local folder or hub id (see `autoprompt models`).")]
Shots = Annotated[int | None, typer.Option(help="k-shot protocol: 16 reads LM-BFF's splits (32: FewGLUE); on a "
                                                "generation task (e2e) the number of training references.")]
DataSeed = Annotated[int, typer.Option(help="Which k-shot split (13/21/42/87/100), or the dev-slice seed.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
Dtype = Annotated[str, typer.Option(
    help="What the model computes in: fp32, bf16, or auto (bf16 where the hardware computes it natively: CUDA, "
         "CPUs with AVX-512 BF16 or AMX). A search ranks and trains in it; its gate and dev/test scores are fp32.")]


DeviceMap = Annotated[str | None, typer.Option(
    help="auto: spread a model bigger than one device over the GPUs, then the CPU, then disk (accelerate); "
         "default: the whole model on one device.")]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


Db = Annotated[str | None, typer.Option(help="Leaderboard database: a file or SQLAlchemy URL "
                                             "(default: $AUTOPROMPT_DB, else runs/leaderboard.db).")]
