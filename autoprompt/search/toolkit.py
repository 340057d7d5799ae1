"""What strategies call to build their starting point: the manual prompt with overrides, trigger
slots, one-token trigger words, and a bounded pool of scored candidates."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoprompt.backends import FrozenLM
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Prompt, Segment, Template, Verbalizer
from autoprompt.search.base import SearchContext


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
    """The prompt a strategy starts from: the task's manual prompt, with overrides.

    Args:
        ctx: the search context.
        template: a template instead of the task's manual one.
        verbalizer: label words as JSON, or the path of a ``prompt.json`` whose verbalizer to
            use (so a verbalizer search can feed a trigger search).
        num_triggers: add this many ``[T]`` after the last field if the template has none.
        init: the initial trigger word (repeated), or one word per trigger.
    """
    manual = ctx.task.default_prompt
    tpl = Template(template) if template else manual.template
    tpl.check_fields(ctx.task.fields)
    if num_triggers:
        tpl = with_triggers(tpl, num_triggers)
    if verbalizer is None:
        verb = manual.verbalizer
    elif Path(verbalizer).suffix == ".json" and Path(verbalizer).is_file():
        verb = Prompt.load(verbalizer).verbalizer
    else:
        verb = Verbalizer.parse(verbalizer)
    ids: tuple[int, ...] = ()
    if tpl.num_triggers:
        words = init.split()
        if len(words) not in (1, tpl.num_triggers):
            raise AutopromptError(f"init {init!r} has {len(words)} words; give one word or one per trigger "
                                  f"({tpl.num_triggers})")
        words = words * tpl.num_triggers if len(words) == 1 else words
        ids = tuple(one_token(ctx.lm, w) for w in words)
    return Prompt(tpl, verb, ids)


def keep_best(pool: Mapping[str, Mapping[str, Any]], size: int = 20) -> dict[str, Any]:
    """The ``size`` entries of ``pool`` with the highest ``"score"``, best first (a candidate pool in a
    strategy's state: trigger sets or templates, each ``{"score": ..., "prompt": ...}``)."""
    return dict(sorted(pool.items(), key=lambda kv: -kv[1]["score"])[:size])


def one_token(lm: FrozenLM, word: str) -> int:
    """The token for ``word`` as it stands after a space (its first piece if it has several)."""
    spaced = lm.tokenize(" " + word)
    if len(spaced) == 1:
        return spaced[0]
    bare = lm.tokenize(word)
    return bare[0] if len(bare) == 1 else spaced[0]
