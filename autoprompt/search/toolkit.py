"""What strategies call to build their starting point: the manual prompt with overrides, trigger
slots, one-token trigger words, and a bounded pool of scored candidates, and
`TriggerSearch`, the base of the searches over trigger tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Prompt, Segment, Template, Verbalizer
from autoprompt.search.base import Searcher, SearchState, hyper
from autoprompt.search.context import SearchContext
from autoprompt.search.model_view import StrategyModel
from autoprompt.tasks.base import Example


def with_triggers(template: Template, num_triggers: int) -> Template:
    """The template itself if it has ``[T]`` slots, else ``num_triggers`` of them after the last field.

    AutoPrompt's templates put the triggers between the input and the prediction slot
    (``{sentence} [T] [T] [T] [P]``); after the last field keeps any instruction text intact.
    """
    if template.num_triggers:
        return template
    last_field = max(i for i, s in enumerate(template.segments) if s.kind == "field") if template.fields else 0
    triggers = [Segment("trigger", space=" ")] * num_triggers
    segments = list(template.segments)
    return Template.from_segments(segments[: last_field + 1] + triggers + segments[last_field + 1 :])


def starting_prompt(ctx: SearchContext, template: str | None = None, verbalizer: str | None = None,
                    num_triggers: int = 0, init: str = "the") -> Prompt:
    """The prompt a strategy starts from: ``ctx.start`` (the task's manual prompt, or a warm start),
    with overrides; every other part of the start (demonstrations, triggers, calibration method,
    soft part) is kept.

    Args:
        ctx: the search context.
        template: a template instead of the start's (its triggers are then new).
        verbalizer: label words as JSON, or the path of a ``prompt.json`` whose verbalizer to
            use (so a verbalizer search can feed a trigger search).
        num_triggers: add this many ``[T]`` after the last field if the template has none.
        init: the initial trigger word (repeated), or one word per trigger; a start that has
            triggers keeps its own.
    """
    start = ctx.start
    tpl = Template(template) if template else start.template
    tpl.check_fields(ctx.task.fields)
    if num_triggers:
        tpl = with_triggers(tpl, num_triggers)
    if verbalizer is None:
        verb = start.verbalizer
    elif Path(verbalizer).suffix == ".json" and Path(verbalizer).is_file():
        verb = Prompt.load(verbalizer).verbalizer
    else:
        verb = Verbalizer.parse(verbalizer)
    ids: tuple[int, ...] = ()
    if tpl is start.template and start.trigger_ids:
        ids = start.trigger_ids  # a warm start's triggers are where the search continues from
    elif tpl.num_triggers:
        words = init.split()
        if len(words) not in (1, tpl.num_triggers):
            raise AutopromptError(f"init {init!r} has {len(words)} words; give one word or one per trigger "
                                  f"({tpl.num_triggers})")
        words = words * tpl.num_triggers if len(words) == 1 else words
        ids = tuple(one_token(ctx.lm, w) for w in words)
    return dataclasses.replace(start, template=tpl, verbalizer=verb, trigger_ids=ids, meta={})


def keep_best(pool: Mapping[str, dict[str, Any]], size: int = 20) -> dict[str, dict[str, Any]]:
    """The ``size`` entries of ``pool`` with the highest ``"score"``, best first (a candidate pool in a
    strategy's state: trigger sets or templates, each ``{"score": ..., "prompt": ...}``)."""
    return dict(sorted(pool.items(), key=lambda kv: -kv[1]["score"])[:size])


class TriggerState(SearchState):
    """`TriggerSearch`'s state."""

    prompt: dict[str, Any]             # the starting prompt (`Prompt.to_json`)
    triggers: list[int]                # the current trigger set
    pool: dict[str, dict[str, Any]]    # `keep_best` entries keyed by trigger ids: ``score``, ``prompt``, ...


T = TypeVar("T", bound=TriggerState)


@dataclass
class TriggerSearch(Searcher[T]):
    """A search over trigger tokens whose candidates are a pool of scored trigger sets in its state.

    The state holds ``prompt`` (the starting prompt's JSON), ``triggers`` (the current set) and
    ``pool`` (`keep_best` entries keyed by trigger ids, each with its train ``score``); the
    candidates the core re-scores are the pool's prompts, best first.

    Args:
        num_triggers: ``[T]`` slots added after the input when the template has none.
        rescore_examples: train examples each trigger set is scored on (None: all of train).
        template: a template with ``[T]`` slots instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    searches = frozenset({"triggers"})
    carries = frozenset({"template", "verbalizer", "demos"})

    num_triggers: int = hyper(5, low=1)
    rescore_examples: int | None = hyper(None, low=1)
    template: str | None = None
    verbalizer: str | None = None

    def start(self, ctx: SearchContext) -> T:
        return cast(T, self.started(ctx))

    def started(self, ctx: SearchContext, init: str = "the") -> TriggerState:
        """The state at the start: the starting prompt, an empty pool, the calibrated start's dev score."""
        prompt = starting_prompt(ctx, self.template, self.verbalizer, self.num_triggers, init)
        if not prompt.template.num_triggers:
            raise AutopromptError(f"{self.name} searches [T] slots; give `num_triggers` >= 1 or a `template` with [T]",
                                  params=("num_triggers", "template"))
        start = ctx.calibrate([prompt])[0]
        return {"prompt": prompt.to_json(), "pool": {}, "best_dev": ctx.evaluator.score(start, ctx.dev).score,
                "triggers": list(prompt.trigger_ids)}

    def rescore_set(self, ctx: SearchContext) -> list[Example]:
        """The train examples every trigger set is scored on: the same every step, so scores of
        different steps compare (and a set scored before is a cache hit)."""
        return ctx.sample(ctx.train, self.rescore_examples or len(ctx.train), salt="rescore", fixed=True)

    def rescore_cost(self, train: int) -> int:
        """How many examples `rescore_set` holds on ``train`` train examples."""
        return min(self.rescore_examples or train, train)

    def pooled(self, state: T, prompts: Sequence[Prompt], scores: Sequence[float],
               **extra: Sequence[float]) -> dict[str, dict[str, Any]]:
        """``state["pool"]`` with these scored prompts added (``extra``: more per-prompt values kept)."""
        pool = dict(state["pool"])
        for i, (p, score) in enumerate(zip(prompts, scores, strict=True)):
            pool[",".join(map(str, p.trigger_ids))] = {"score": score, "prompt": p.to_json(),
                                                       **{k: v[i] for k, v in extra.items()}}
        return keep_best(pool)

    def candidates(self, ctx: SearchContext, state: T) -> list[AnyPrompt]:
        ranked: list[AnyPrompt] = [Prompt.from_json(entry["prompt"]) for entry in state["pool"].values()]
        if ranked:
            return ranked
        start = Prompt.from_json(state["prompt"])  # no step ran: the starting triggers, calibrated
        return list(ctx.calibrate([start.with_triggers(state["triggers"])]))

    def best(self, ctx: SearchContext, state: T) -> AnyPrompt:
        return self.candidates(ctx, state)[0]


def one_token(lm: StrategyModel, word: str) -> int:
    """The token for ``word`` as it stands after a space (its first piece if it has several)."""
    spaced = lm.tokenize(" " + word)
    if len(spaced) == 1:
        return spaced[0]
    bare = lm.tokenize(word)
    return bare[0] if len(bare) == 1 else spaced[0]
