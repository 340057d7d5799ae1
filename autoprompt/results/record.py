"""`RunRecord`: one finished search, typed; ``to_json()`` is its ``result.json``.

The loop builds it, the run folder stores ``to_json()``, and every reader (the leaderboard, the
CLI's table, the tuner) takes ``RunRecord.from_json(...)`` and reads fields, so a renamed key is a
type error in one place instead of a ``KeyError`` in four. Results written before a field existed
read with that field's default. Open-ended parts (a strategy's ``details``, the selection trace, the
data protocol) stay dicts: each strategy owns their keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from autoprompt.errors import AutopromptError


@dataclass(frozen=True)
class DevTest:
    """One prompt's score on dev and on test."""

    dev: float
    test: float


@dataclass(frozen=True)
class Baseline(DevTest):
    """The manual prompt's scores on the same examples, and which prompt that was."""

    template: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class Spent:
    """The budget: example-forwards used of the limit, how they split, and the tokens they ran."""

    forwards: int
    backwards: int
    used: int
    limit: int | None
    max_seconds: float | None = None
    tokens: int = 0


@dataclass(frozen=True)
class Backbone:
    """The frozen model's weight checksum before and after the search (they must be equal)."""

    sha256_before: str
    sha256: str
    unchanged: bool
    requires_grad: bool


@dataclass
class RunRecord:
    """Everything a finished search reports; ``to_json()`` writes today's ``result.json``."""

    task: str
    strategy: str
    variant: str
    model: str
    seed: int
    shots: int | None
    data_seed: int | None
    params: dict[str, Any]
    metric: str
    prompt: dict[str, Any]             # the reported prompt's prompt.json
    prompt_fingerprint: str
    prompt_text: str                   # the template with its fields as {placeholders}
    triggers: list[str]                # one decoded string per trigger token
    trigger_text: str                  # the trigger tokens decoded together
    calibration: str
    scores: DevTest
    baseline: Baseline
    deltas: dict[str, dict[str, Any]]  # dev/test: found − manual with a paired-bootstrap interval
    selection: dict[str, Any]
    budget: Spent
    steps: int
    details: dict[str, Any]
    warnings: list[str]
    backbone: Backbone | None
    wall_s: float
    split_sizes: dict[str, int]
    protocol: dict[str, Any]
    versions: dict[str, str]
    run_dir: str
    finished_at: str | None
    lama: dict[str, Any] | None = None          # P@k and MRR of found and baseline (LAMA tasks)
    model_licence: str | None = None            # the backbone weights' licence, where known
    source_model: str | None = None             # a transferred prompt: the model it was found on
    leaderboard: dict[str, Any] | None = None   # set when the leaderboard could not record the run
    search_dtype: str = "fp32"                  # what the search's steps computed in (its scores: fp32)
    start: dict[str, Any] | None = None         # a warm start: its path, fingerprint, scores and the gain over it
    generation: dict[str, Any] | None = None    # a generation task: ROUGE-L, likelihoods, decoding, outputs file
    members: dict[str, Any] | None = None       # a task set: each member's test next to its own manual prompt
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for name in ("scores", "baseline", "budget", "backbone"):
            out[name] = asdict(out[name]) if out[name] is not None else None
        for name in ("lama", "leaderboard", "backbone", "model_licence", "source_model", "start", "generation",
                     "members"):
            if out[name] is None:
                del out[name]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Read a ``result.json``, including one written before some fields existed.

        Raises:
            AutopromptError: a field every result has (task, strategy, model, scores, baseline) is missing
                or of the wrong type.
        """
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("task", "strategy", "model", "scores", "baseline") if k not in data]
        if missing:
            raise AutopromptError(f"not a result file: no {', '.join(missing)}")
        try:
            record = cls._from_fields(data, known)
        except (KeyError, TypeError, AttributeError) as err:
            raise AutopromptError(f"not a result file: a field is missing or of the wrong type ({err})") from None
        for name, pair in (("scores", record.scores), ("baseline", record.baseline)):
            for split in ("dev", "test"):
                value = getattr(pair, split)
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise AutopromptError(f"not a result file: {name}.{split} is {value!r}, not a finite number")
        return record

    @classmethod
    def _from_fields(cls, data: dict[str, Any], known: set[str]) -> RunRecord:
        scores, base, spent = data["scores"], data["baseline"], data.get("budget") or {}
        params = data.get("params") or {}
        return cls(
            task=data["task"], strategy=data["strategy"], variant=data.get("variant") or "",
            model=data["model"], seed=data.get("seed", 0), shots=data.get("shots"), data_seed=data.get("data_seed"),
            params=params, metric=data.get("metric") or "accuracy", prompt=data.get("prompt") or {},
            prompt_fingerprint=data.get("prompt_fingerprint") or "", prompt_text=data.get("prompt_text") or "",
            triggers=list(data.get("triggers") or []), trigger_text=data.get("trigger_text") or "",
            calibration=data.get("calibration") or params.get("calibration") or "none",
            scores=DevTest(scores["dev"], scores["test"]),
            baseline=Baseline(base["dev"], base["test"], base.get("template", ""), base.get("fingerprint", "")),
            deltas=data.get("deltas") or {}, selection=data.get("selection") or {},
            budget=Spent(spent.get("forwards", 0), spent.get("backwards", 0), spent.get("used", 0),
                         spent.get("limit"), spent.get("max_seconds"), spent.get("tokens", 0)),
            steps=data.get("steps", 0), details=data.get("details") or {}, warnings=list(data.get("warnings") or []),
            backbone=Backbone(**data["backbone"]) if data.get("backbone") else None,
            wall_s=data.get("wall_s") or 0.0, split_sizes=data.get("split_sizes") or {},
            protocol=data.get("protocol") or {}, versions=data.get("versions") or {},
            run_dir=data.get("run_dir") or "", finished_at=data.get("finished_at"),
            lama=data.get("lama"), model_licence=data.get("model_licence"), source_model=data.get("source_model"),
            leaderboard=data.get("leaderboard"), search_dtype=data.get("search_dtype") or "fp32",
            start=data.get("start"), generation=data.get("generation"), members=data.get("members"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @property
    def recorded(self) -> bool:
        """False when the leaderboard could not take this run (``leaderboard`` says why)."""
        return self.leaderboard is None or bool(self.leaderboard.get("recorded", True))

    @property
    def label_words(self) -> Any:
        """The reported prompt's verbalizer (an ensemble's first member's)."""
        return self.prompt.get("verbalizer") or (self.prompt.get("ensemble") or [{}])[0].get("verbalizer")

    @property
    def shown_prompt(self) -> str:
        """The prompt as a row shows it: its text, with triggers or a soft prompt's nearest tokens."""
        readout = self.details.get("readout")
        if readout:  # soft prompts are shown by their nearest tokens
            return f"{self.prompt_text}  (nearest tokens: {readout['discrete_prompt']})"
        if self.trigger_text:
            return f"{self.prompt_text}  (triggers: {self.trigger_text.strip()!r})"
        if self.triggers:  # older results hold raw pieces and no decoded text
            return f"{self.prompt_text}  (triggers: {' '.join(self.triggers)})"
        return self.prompt_text


@dataclass(frozen=True)
class Interrupted:
    """A search or pipeline stopped after ``step`` steps of this call (``stop_after``); its last step is
    checkpointed, and resuming ``run_dir`` continues it (inside ``stage``, for a pipeline)."""

    run_dir: str
    step: int
    stage: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"interrupted": True, "run_dir": self.run_dir, "step": self.step,
                **({"stage": self.stage} if self.stage is not None else {})}


def finished(result: RunRecord | Interrupted) -> RunRecord:
    """``result`` as the finished run it is: a search given no step limit (``stop_after``) finishes or
    raises, so only a caller that stops it early sees `Interrupted`."""
    assert isinstance(result, RunRecord), f"the run stopped early: {result}"
    return result
