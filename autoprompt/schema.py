"""Schemas of the files autoprompt reads back: ``prompt.json``, checkpoints, task TOMLs (``spec.json``'s
is `SearchSpec` itself).

Each file is validated once, where it is read, against a typed model; a violation becomes one line
naming the file, the field and what was expected (`validate`). The models check *shape and type*;
meaning (a template's slots, label words a tokenizer can spell) is checked by the classes the data
becomes (`Template`, `Verbalizer`, ...), which raise their own one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from autoprompt.errors import AutopromptError

M = TypeVar("M")

Words = StrictStr | list[StrictStr]
Number = StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationFile(_Strict):
    method: StrictStr
    log_prior: dict[str, Number] | None = None


class RuleFile(_Strict):
    """A prompt's decision rule (`autoprompt.prompts.Rule.to_json`)."""

    name: Literal["direct", "channel", "centroid"]
    length_norm: StrictBool = False
    distance: Literal["cosine", "euclidean"] = "euclidean"
    normalise: StrictBool = True
    standardise: StrictBool = True
    centroids: dict[str, list[Number]] | None = None
    scale: Number | None = None
    center: list[Number] | None = None
    spread: list[Number] | None = None


class DemonstrationFile(_Strict):
    fields: dict[str, StrictStr]
    label: StrictStr


class DemonstrationsFile(_Strict):
    """A prompt's in-context demonstrations (`autoprompt.prompts.Demonstrations.to_json`)."""

    examples: list[DemonstrationFile] = Field(default_factory=list)
    separator: StrictStr = "\n\n"
    pool: list[DemonstrationFile] = Field(default_factory=list)
    k: StrictInt = Field(default=0, ge=0)
    overflow: Literal["error", "drop"] = "error"


class PromptFile(_Strict):
    """One discrete, triggered or soft prompt (`autoprompt.prompts.Prompt.to_json`)."""

    template: StrictStr
    verbalizer: dict[str, Words]
    trigger_ids: list[Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=list)
    soft: StrictStr | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    calibration: StrictStr | CalibrationFile | None = None
    demos: DemonstrationsFile | None = None
    rule: RuleFile | None = None  # a bare name is read as {"name": ...} (`Prompt.from_json`)


class EnsembleFile(_Strict):
    """Weighted prompts (`autoprompt.prompts.Ensemble.to_json`)."""

    ensemble: list[PromptFile] = Field(min_length=1)
    weights: list[Number] = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)


class BudgetFile(BaseModel):
    forwards: StrictInt = Field(ge=0)
    backwards: StrictInt = Field(ge=0)
    tokens: StrictInt = Field(default=0, ge=0)


class CheckpointFile(BaseModel):
    """``checkpoint.json``: the strategy's state after ``step`` steps and what had been spent."""

    model_config = ConfigDict(extra="allow")

    step: StrictInt = Field(ge=1)
    state: dict[str, Any] = Field(min_length=1)
    tensors: StrictStr | None = None
    budget: BudgetFile
    paid: list[list[StrictStr]] = Field(default_factory=list)
    cache: list[dict[str, Any]] = Field(default_factory=list)  # the evaluator's scores (`Evaluator.cached`)
    elapsed_s: Number = Field(ge=0)


class TaskFile(_Strict):
    """A custom task's TOML (see `autoprompt.tasks.custom`)."""

    name: StrictStr | None = None
    files: dict[Literal["train", "dev", "test"], StrictStr]
    format: Literal["csv", "tsv", "jsonl", "label-first"] | None = None
    columns: list[StrictStr] | None = Field(default=None, min_length=1)
    fields: list[StrictStr] | dict[str, StrictStr] = Field(min_length=1)
    label_column: StrictStr = "label"
    target_column: StrictStr | None = None  # a generation task: the reference text's column
    labels: list[StrictStr | StrictInt] | None = Field(default=None, min_length=2)
    template: StrictStr
    verbalizer: dict[str, Words] | None = Field(default=None, min_length=2)
    metric: Literal["accuracy", "f1", "macro_f1", "bleu"] | None = None
    data_outside: StrictBool = False  # [files] may name files outside the spec's folder (absolute or ../)


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "the top level"
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"field {where!r} is missing"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's / a dataclass's
        return f"unknown field {where!r}"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"field {where!r}: {error['msg'].lower()}, got {shown} ({type(value).__name__})"


def validate(model: type[M], data: Any, source: str | Path, fix: str = "") -> M:
    """``data`` as ``model`` (a pydantic model or a dataclass with pydantic field types), or an
    `AutopromptError` naming ``source``, the first bad field and ``fix``."""
    if not isinstance(data, Mapping):
        raise AutopromptError(f"{source} does not hold a JSON/TOML object (got {type(data).__name__}){fix}")
    try:
        return TypeAdapter(model).validate_python(dict(data))
    except ValidationError as err:
        errors = err.errors(include_url=False)
        # a union reports one error per alternative: count fields, not alternatives
        others = len({e["loc"][:1] for e in errors} - {errors[0]["loc"][:1]})
        more = f" (and {others} more field(s))" if others else ""
        raise AutopromptError(f"{source}: {_describe(errors[0])}{more}{fix}") from None
