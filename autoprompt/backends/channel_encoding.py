"""Prompt + example → token ids in noisy-channel order: the label part first, the input after.

`ChannelEncoder` adds `encode_channel` to `PromptEncoder`: under the ``channel`` rule a class is
scored by how likely the input is after the label part of the template with that class's word in
place (`channel_parts` cuts a template in two: what follows the last field, and the rest).
Demonstrations are shown in the same order, each label part before its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from autoprompt.backends.encoding import RESERVED, Item, PromptEncoder, Run, _append_text
from autoprompt.backends.protocol import ChannelEncoded
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Demonstration, Prompt, Segment, Template
from autoprompt.tasks.base import Example


class ChannelEncoder(PromptEncoder):
    """`PromptEncoder` with the channel order (`FrozenLM` derives from it)."""

    def encode_channel(self, prompt: Prompt, example: Example, labels: Sequence[str],
                       demos: Sequence[Demonstration] | None = None) -> ChannelEncoded:
        """Token ids of ``example`` under the ``channel`` rule: per class and label word, the label part
        of the template with the word in place (after the demonstrations, each in the same order), and
        the input part the classes are scored on (`channel_parts`). The input is truncated as `encode`
        truncates it, against the longest label part."""
        label_part, input_part = channel_parts(prompt.template)  # [P] may stand anywhere after the last field
        triggers = dict(zip([i for i, s in enumerate(prompt.template.segments) if s.kind == "trigger"],
                            prompt.trigger_ids, strict=True))
        join = _leading_space(label_part)
        query = self._part_layout(input_part, example.fields, triggers, join=join)
        heads = [[self._part_layout(label_part, {}, triggers, word) for word in words]
                 for words in prompt.verbalizer.for_labels(labels)]
        head_ids = [[[t for _, toks in self._ids(h) for t in toks] for h in per] for per in heads]
        longest = max((h for per in heads for h in per), key=lambda h: sum(len(t) for _, t in self._ids(h)))
        self._truncate([*longest, *query])
        query_ids = [t for _, toks in self._ids(query) for t in toks]
        shown = list(demos if demos is not None else prompt.demos.examples if prompt.demos else ())
        block: list[int] = []
        if shown:
            assert prompt.demos is not None  # demonstrations come from the prompt's own
            sep = list(self.tokenize(prompt.demos.separator))
            rendered = [self._channel_demo_ids(prompt, label_part, input_part, triggers, d) for d in shown]
            room = (self.context_length - RESERVED - len(self.prefix_special) - len(query_ids)
                    - max(len(h) for per in head_ids for h in per))
            needed = sum(len(r) + len(sep) for r in rendered)
            if needed > room and prompt.demos.overflow == "error":
                raise AutopromptError(
                    f"{len(shown)} demonstrations ({needed} tokens) and the query exceed {self.name}'s context of "
                    f"{self.context_length} tokens; use fewer demonstrations (`k`) or `overflow=drop`")
            while rendered and sum(len(r) + len(sep) for r in rendered) > room:
                rendered.pop(0)  # the one farthest from the query
            block = [t for r in rendered for t in (*r, *sep)]
        start = [*self.prefix_special, *block]
        return ChannelEncoded(tuple(tuple(tuple(start + h) for h in per) for per in head_ids), tuple(query_ids))

    def _channel_demo_ids(self, prompt: Prompt, label_part: list[tuple[int, Segment]],
                          input_part: list[tuple[int, Segment]], triggers: dict[int, int],
                          demo: Demonstration) -> list[int]:
        """One demonstration in channel order: its label's first word in the label part, then its input."""
        layout = [*self._part_layout(label_part, {}, triggers, prompt.verbalizer.words[demo.label][0]),
                  *self._part_layout(input_part, demo.fields, triggers, join=_leading_space(label_part))]
        return [t for _, toks in self._ids(layout) for t in toks]

    def _part_layout(self, part: list[tuple[int, Segment]], fields: Mapping[str, str], triggers: dict[int, int],
                     word: str | None = None, join: str = " ") -> list[Item]:
        """Runs and trigger slots of one part of a channel template: the label part (``word`` at ``[P]``,
        its leading whitespace dropped: it opens the text) or, without a ``word``, the input part
        (``fields`` filled, ``join`` in front: it follows the label part as running text)."""
        layout: list[Item] = []
        for i, seg in part:
            if seg.kind == "text":
                _append_text(layout, "text", seg.value)
            elif seg.kind == "field":
                try:
                    _append_text(layout, "field", seg.space + fields[seg.value])
                except KeyError:
                    raise AutopromptError(f"template field {{{seg.value}}} is not in the example "
                                          f"(fields: {list(fields)})") from None
            elif seg.kind == "trigger":
                layout.append(("trigger", [triggers[i]]))
            elif seg.kind == "predict":
                _append_text(layout, "text", seg.space + (word or ""))
            else:
                raise AutopromptError("rule 'channel' scores discrete prompts: a template with [S] slots cannot be "
                                      "read in channel order; use rule direct or centroid")
        if layout and layout[0][0] == "run":
            first = cast(Run, layout[0][1])[0]
            first[1] = first[1].lstrip() if word is not None else join + first[1].lstrip()
        return layout


def channel_parts(template: Template) -> tuple[list[tuple[int, Segment]], list[tuple[int, Segment]]]:
    """(label part, input part) of a template read in channel order, as (index, segment) pairs.

    The label part is what follows the last field (``" It was [P]."``); the input part is the rest
    (``"{sentence}"``). Text glued to the last field (no space between, as the ``?`` of
    ``"{hypothesis}? Answer: [P]"``) stays with the input.
    """
    segments = list(enumerate(template.segments))
    fields = [i for i, s in segments if s.kind == "field"]
    if not fields:
        raise AutopromptError(f"template {template.source!r} has no input field for rule 'channel' to score")
    cut = fields[-1] + 1
    input_part, label_part = segments[:cut], segments[cut:]
    if not any(s.kind == "predict" for _, s in label_part):
        raise AutopromptError(f"template {template.source!r}: rule 'channel' reads the label part (the text from the "
                              "last field on, with [P]) before the input, so [P] must follow the last field")
    if label_part and label_part[0][1].kind == "text":
        index, text = label_part[0][0], label_part[0][1].value
        if text.strip() and not text[:1].isspace():
            glued = text.split(None, 1)[0]
            rest = text[len(glued):]
            input_part = [*input_part, (index, Segment("text", glued))]
            label_part = ([(index, Segment("text", rest))] if rest.strip() else []) + label_part[1:]
    return label_part, input_part


def _leading_space(label_part: list[tuple[int, Segment]]) -> str:
    """The whitespace that separated the input from the label part in the template (``"\\n"`` in
    ``"Review: {sentence}\\nSentiment: [P]"``): it joins them again in channel order (one space if none)."""
    if not label_part:
        return " "
    seg = label_part[0][1]
    text = seg.value if seg.kind == "text" else seg.space
    return text[: len(text) - len(text.lstrip())] or " "
