"""The parts of a prompt a strategy searches or keeps, and the check that a warm start can be built on.

A prompt has parts: its template text, trigger tokens, label words, demonstrations and soft
part (its calibration is re-estimated by every search for the prompt it reports, so it is not a
part one keeps). A strategy declares which parts it ``searches`` and which parts of a start it
``carries`` unchanged (`autoprompt.search.Searcher`); a start holding a part that is neither is
refused before any work, with a one-line error naming the part.
"""

from __future__ import annotations

from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt
from autoprompt.prompts.soft import resolve_soft

PARTS: tuple[str, ...] = ("template", "triggers", "verbalizer", "demos", "soft")


def prompt_parts(prompt: Prompt) -> dict[str, Any]:
    """Each part of ``prompt`` as a comparable value (``None`` where the prompt has none).

    ``template`` is the text without its ``[T]`` slots, so a trigger search that adds slots after
    the input keeps the template it started from.
    """
    # trigger and soft slots belong to those parts: a search that adds them keeps the template
    text = "".join(s.value if s.kind == "text" else "" if s.kind in ("trigger", "soft") else f"<{s.kind}:{s.value}>"
                   for s in prompt.template.segments)
    soft = resolve_soft(prompt.soft)
    return {"template": text,
            "triggers": tuple(prompt.trigger_ids) or None,
            "verbalizer": prompt.verbalizer.to_json(),
            "demos": prompt.demos.to_json() if prompt.demos is not None else None,
            "soft": soft.digest if soft is not None else None}


def present_parts(prompt: Prompt, manual: Prompt) -> set[str]:
    """The parts ``prompt`` has beyond what every prompt has: triggers, demonstrations, a soft part,
    and the template and label words where they differ from the task's ``manual`` prompt."""
    mine, base = prompt_parts(prompt), prompt_parts(manual)
    return {p for p in PARTS if mine[p] is not None and (p in ("triggers", "demos", "soft") or mine[p] != base[p])}


def check_start(strategy: str, searches: frozenset[str], carries: frozenset[str], start: AnyPrompt,
                manual: Prompt) -> Prompt:
    """``start`` if ``strategy`` can build on it; else a one-line error naming what it cannot keep."""
    if isinstance(start, Ensemble):
        raise AutopromptError(f"{strategy} cannot start from an ensemble of {len(start.members)} prompts; start "
                              "from one of its members (a single prompt.json)")
    lost = sorted(present_parts(start, manual) - searches - carries)
    if lost:
        names = {"template": "template text", "triggers": "trigger tokens", "verbalizer": "label words",
                 "demos": "demonstrations", "soft": "soft (continuous) part"}
        kept = ", ".join(names[p] for p in PARTS if p in carries) or "nothing"
        raise AutopromptError(f"{strategy} cannot keep the start prompt's {' and '.join(names[p] for p in lost)} "
                              f"(it keeps {kept}); start from a prompt without them, or run {strategy} "
                              "before the stage that adds them")
    return start


def kept_parts_differ(before: Prompt, after: AnyPrompt, searched: frozenset[str]) -> list[str]:
    """The parts outside ``searched`` in which ``after`` (each member of an ensemble) differs from
    ``before`` (empty: every part the strategy does not search was kept)."""
    members = after.members if isinstance(after, Ensemble) else (after,)
    start = prompt_parts(before)
    out: set[str] = set()
    for member in members:
        now = prompt_parts(member)
        out |= {p for p in PARTS if p not in searched and now[p] != start[p]}
    return sorted(out)
