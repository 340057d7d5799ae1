"""``manual``: no search. The task's manual prompt (or the one given, or a warm start) through the same run path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from autoprompt import AnyPrompt, prompt_from_json
from autoprompt.search import SearchContext, Searcher, SearchState, starting_prompt


class ManualState(SearchState):
    prompt: dict[str, Any]  # the prompt scored (`Prompt.to_json` or an ensemble's)


@dataclass
class Manual(Searcher[ManualState]):
    """Score a fixed prompt: the baseline row of every comparison.

    Args:
        template: a template to use instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    name = "manual"
    gated = False  # the baseline reports the prompt it was given
    carries = frozenset({"template", "triggers", "verbalizer", "demos", "soft"})
    task_kinds = ("classification", "ranking", "generation")

    summary = "no search: the task's manual prompt (or --param template=...), scored like any other"
    default_budget = 1000

    calibration: Literal["none", "contextual", "prior"] = "none"  # the manual prompt as written
    template: str | None = None
    verbalizer: str | None = None

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        return self._calibration_cost(train) + dev, 0  # its one step only says it is done

    def start(self, ctx: SearchContext) -> ManualState:
        if ctx.warm_start is not None and self.template is None and self.verbalizer is None:
            prompt: AnyPrompt = ctx.start  # a warm start is scored as it was saved, calibration included
        else:
            prompt = ctx.calibrate([starting_prompt(ctx, self.template, self.verbalizer)])[0]
        return {"prompt": prompt.to_json(), "best_dev": ctx.evaluator.score(prompt, ctx.dev).score}

    def step(self, ctx: SearchContext, state: ManualState) -> ManualState:
        return {**state, "done": True}

    def best(self, ctx: SearchContext, state: ManualState) -> AnyPrompt:
        return prompt_from_json(state["prompt"])
