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
from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor

from autoprompt.backends.protocol import Encoded, WordTable
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Demonstration, Prompt, Template
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


def _append_text(layout: list[Item], kind: str, text: str) -> None:
    """Add ``text`` to the run at the end of ``layout`` (a new run after a slot)."""
    if not layout or layout[-1][0] != "run":
        layout.append(("run", []))
    cast(Run, layout[-1][1]).append([kind, text])
