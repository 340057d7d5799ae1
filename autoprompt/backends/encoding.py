"""Prompt + example → token ids, the same way for every backend (`Encoded`).

A template is laid out as *runs* (consecutive template text and fields, rendered and tokenized as
one string) between *slots* (trigger tokens, soft-slot placeholders, the prediction slot), so every
slot's position is known exactly and, between slots, the ids are those of the rendered text: a
sentencepiece tokenizer puts no word-boundary piece at a field's edge and a BPE merge across
"great." happens as in running text. A slot is a boundary; the run after it is tokenized from a
fresh start. The longest field is cut (in tokens, then decoded back to text and re-rendered) when
the whole would exceed ``max_length``. Backends differ only in the hooks at the end of
`PromptEncoder`: what ``[P]`` becomes and what closes the sequence.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from torch import Tensor

from autoprompt.backends.protocol import ChannelEncoded, Encoded, WordTable
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Demonstration, Prompt, Segment, Template
from autoprompt.tasks.base import Example

Part = list[str]  # [kind ("text" | "field"), its text]: a field's text starts with the space in front of it
Run = list[Part]  # consecutive text and fields, tokenized as one string
Item = tuple[str, "Run | list[int]"]  # ("run", its parts) or (slot kind, its token ids)
RESERVED = 8  # tokens kept free for multi-token label words (extra masks / a continuation)


class PromptEncoder:
    """The encoding half of a backend (a mixin of `FrozenLM`); needs ``tokenizer``, ``name``,
    ``max_length``, ``context_length``, ``pad_id``, ``prefix_special`` and ``embedding_matrix``."""

    tokenizer: Any
    name: str
    max_length: int
    context_length: int
    pad_id: int
    prefix_special: tuple[int, ...]
    suffix_special: tuple[int, ...]

    def embedding_matrix(self) -> Tensor:
        raise NotImplementedError

    # ---- what backends override ----------------------------------------------------------------

    def check_template(self, template: Template) -> None:
        """Raise if this backend cannot score ``template`` (a causal LM needs ``[P]`` last)."""

    def predict_tokens(self) -> list[int]:
        """What ``[P]`` becomes in the ids (a masked LM: one mask token; a causal LM: nothing)."""
        return []

    def closing_tokens(self) -> tuple[int, ...]:
        """What ends every sequence (a masked LM: its SEP/EOS; a causal LM: nothing, it predicts next)."""
        return ()

    def content_free_texts(self) -> list[str]:
        """Inputs that carry no content, for contextual calibration (Zhao et al. 2021)."""
        return ["", "N/A"]

    # ---- shared ----------------------------------------------------------------------------------

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - backends live as long as the process
    def tokenize(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without special tokens (memoised: search re-encodes often)."""
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation(self, context: str, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` as it tokenizes right after ``context`` (the tail of the whole
        string's ids), or on its own where the context's last token merges into it."""
        whole, head = self.tokenize(context + text), self.tokenize(context)
        if context and whole[: len(head)] == head and len(whole) > len(head):
            return whole[len(head):]
        return self.tokenize(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (trigger tokens are shown this way, never as raw pieces)."""
        return str(self.tokenizer.decode(list(ids)))

    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable:
        """Token ids of every label word, as the model sees it at ``[P]``: after the template text in
        front of the slot, with the space between them (``" great"`` after ``"It was"``)."""
        segments = prompt.template.segments
        at = next(i for i, s in enumerate(segments) if s.kind == "predict")
        before = segments[at - 1].value if at and segments[at - 1].kind == "text" else ""
        table = []
        for label, words in zip(labels, prompt.verbalizer.for_labels(labels), strict=True):
            ids = []
            for word in words:
                toks = self.continuation(before, segments[at].space + word)
                unk = self.tokenizer.unk_token_id
                if not toks or (unk is not None and unk in toks and word != self.tokenizer.unk_token):
                    raise AutopromptError(
                        f"label word {word!r} (label {label!r}) cannot be represented by the tokenizer "
                        f"of {self.name} (tokens {list(toks)}); choose another word"
                    )
                ids.append(toks)
            table.append(ids)
        return table

    def check_triggers(self, prompt: Prompt) -> None:
        """Raise unless every trigger id is a token of this model's vocabulary (a prompt searched on
        another model holds another vocabulary's ids)."""
        vocab = self.embedding_matrix().shape[0]
        bad = [i for i in prompt.trigger_ids if not 0 <= i < vocab]
        if bad:
            searched_on = prompt.meta.get("model")
            hint = f"score it with the model it was searched on ({searched_on})" if searched_on else \
                "score it with the model it was searched on"
            raise AutopromptError(f"trigger id(s) {bad[:3]} are outside {self.name}'s vocabulary of {vocab} tokens; "
                                  f"{hint}")

    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded:
        """Token ids of the prompt filled with ``example`` (fields truncated to ``max_length``), with
        the prompt's demonstrations (or ``demos``, the ones chosen for this query from its pool)."""
        self.check_template(prompt.template)
        layout = self._layout(prompt, example)
        self._truncate(layout)
        query: list[int] = []
        predict_at, trigger_at, soft_at = -1, [], []
        for kind, toks in self._ids(layout):
            if kind == "predict":
                predict_at = len(query)
            elif kind == "trigger":
                trigger_at.append(len(query))
            elif kind == "soft":
                soft_at.append(len(query))
            query.extend(toks)
        shown = list(demos if demos is not None else prompt.demos.examples if prompt.demos else ())
        before, after = self._demo_block(prompt, shown, len(query)) if shown else ([], [])
        offset = len(self.prefix_special) + len(before)
        ids = [*self.prefix_special, *before, *query, *after, *self.closing_tokens()]
        return Encoded(tuple(ids), predict_at + offset, tuple(i + offset for i in trigger_at),
                       tuple(i + offset for i in soft_at))

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

    def _demo_block(self, prompt: Prompt, demos: list[Demonstration], query_len: int) -> tuple[list[int], list[int]]:
        """The demonstrations' ids before and after the query: all before on a causal LM (the
        last nearest the query), all after on a masked LM (LM-BFF: the query and its mask first)."""
        assert prompt.demos is not None  # only called for a prompt with demonstrations
        sep = list(self.tokenize(prompt.demos.separator))
        rendered = [self._demo_ids(prompt, d) for d in demos]
        first = not self.predict_tokens()  # a causal LM predicts the next token: demonstrations first
        room = self.context_length - RESERVED - len(self.prefix_special) - len(self.closing_tokens()) - query_len
        needed = sum(len(r) + len(sep) for r in rendered)
        if needed > room and prompt.demos.overflow == "error":
            raise AutopromptError(
                f"{len(demos)} demonstrations ({needed} tokens) and the query ({query_len} tokens) exceed "
                f"{self.name}'s context of {self.context_length} tokens; use fewer demonstrations (`k`) or "
                "`overflow=drop`")
        while rendered and sum(len(r) + len(sep) for r in rendered) > room:
            rendered.pop(0 if first else -1)  # the one farthest from the query
        block = [t for r in rendered for t in ([*r, *sep] if first else [*sep, *r])]
        return (block, []) if first else ([], block)

    def _demo_ids(self, prompt: Prompt, demo: Demonstration) -> list[int]:
        """One demonstration under the prompt's template: its fields, triggers and its label's first
        word at ``[P]`` (rendered into the run around it); soft slots belong to the query only."""
        layout: list[Item] = []
        triggers = iter(prompt.trigger_ids)
        predicted = False
        for seg in prompt.template.segments:
            if seg.kind == "text" and not (predicted and not self.predict_tokens()):
                _append_text(layout, "text", seg.value)
            elif seg.kind == "field":
                _append_text(layout, "field", seg.space + demo.fields[seg.value])
            elif seg.kind == "trigger":
                layout.append(("trigger", [next(triggers)]))
            elif seg.kind == "predict":
                _append_text(layout, "text", seg.space + prompt.verbalizer.words[demo.label][0])
                predicted = True
        return [t for _, toks in self._ids(layout) for t in toks]

    def _layout(self, prompt: Prompt, example: Example) -> list[Item]:
        """The template filled with ``example``: runs of text and fields between slots."""
        layout: list[Item] = []
        triggers = iter(prompt.trigger_ids)
        predict = self.predict_tokens()
        for seg in prompt.template.segments:
            if seg.kind == "text":
                if not predict and layout and layout[-1][0] == "predict":
                    continue  # text after an empty [P] (a causal LM's trailing whitespace) is never seen
                _append_text(layout, "text", seg.value)
            elif seg.kind == "field":
                try:
                    value = example.fields[seg.value]
                except KeyError:
                    raise AutopromptError(
                        f"template field {{{seg.value}}} is not in the example (fields: {list(example.fields)})"
                    ) from None
                _append_text(layout, "field", seg.space + value)
            elif seg.kind == "trigger":
                layout.append(("trigger", [next(triggers)]))
            elif seg.kind == "soft":
                layout.append(("soft", [self.pad_id]))
            else:
                layout.append(("predict", list(predict)))
        return layout

    def _ids(self, layout: Sequence[Item]) -> list[tuple[str, list[int]]]:
        """(kind, token ids) of every item: a run's ids are those of its rendered text."""
        out: list[tuple[str, list[int]]] = []
        for kind, content in layout:
            if kind == "run":
                out.append((kind, list(self.tokenize("".join(text for _, text in cast(Run, content))))))
            else:
                out.append((kind, cast(list[int], content)))
        return out

    def _truncate(self, layout: list[Item]) -> None:
        """Cut the longest field from its end until the sequence fits ``max_length``.

        The cut is made in the field's own tokens and decoded back to text, so the run is
        re-rendered and re-tokenized as a whole (a cut never leaves half a merge behind).
        """
        frame = len(self.prefix_special) + len(self.closing_tokens()) + RESERVED
        fields = [part for kind, content in layout if kind == "run" for part in cast(Run, content)
                  if part[0] == "field"]
        while (excess := frame + sum(len(t) for _, t in self._ids(layout)) - self.max_length) > 0:
            sized = [(len(self.tokenize(part[1])), part) for part in fields]
            longest, part = max(sized, key=lambda s: s[0], default=(0, None))
            if part is None or longest <= 1:
                raise AutopromptError(
                    f"the template alone is longer than max_length={self.max_length} tokens; shorten it"
                )
            keep = max(1, longest - excess)
            part[1] = self._cut_text(part[1], keep)

    def _cut_text(self, text: str, keep: int) -> str:
        """``text`` cut to (at most) its first ``keep`` tokens, as text with its leading space kept."""
        cut = self.decode(self.tokenize(text)[:keep]).rstrip("\ufffd")  # no half of a multi-byte character
        space = text[: len(text) - len(text.lstrip())]
        if space and not cut.startswith(space):
            cut = space + cut.lstrip()  # decoders of sentencepiece tokenizers drop a leading space
        if len(cut) >= len(text) or len(self.tokenize(cut)) >= len(self.tokenize(text)):
            cut = text[:-1]  # the decoded cut re-merged into as many tokens: shorten by a character instead
        return cut


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


def _append_text(layout: list[Item], kind: str, text: str) -> None:
    """Add ``text`` to the run at the end of ``layout`` (a new run after a slot)."""
    if not layout or layout[-1][0] != "run":
        layout.append(("run", []))
    cast(Run, layout[-1][1]).append([kind, text])
