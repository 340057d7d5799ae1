"""Prompt + example → token ids, the same way for every backend (`Encoded`).

Template text, fields, trigger tokens, soft-slot placeholders and the prediction slot are
tokenized piece by piece, so every slot's position is known exactly; the longest field is cut
when the whole would exceed ``max_length``. Backends differ only in the hooks at the end of
`PromptEncoder`: what ``[P]`` becomes and what closes the sequence.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from autoprompt.backends.protocol import Encoded, WordTable
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Demonstration, Prompt, Template
from autoprompt.tasks.base import Example

Piece = tuple[str, list[int]]  # (segment kind, its token ids)
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

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (trigger tokens are shown this way, never as raw pieces)."""
        return str(self.tokenizer.decode(list(ids)))

    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable:
        """Token ids of every label word, as the model sees it at ``[P]`` (with its leading space)."""
        space = next(s.space for s in prompt.template.segments if s.kind == "predict")
        table = []
        for label, words in zip(labels, prompt.verbalizer.for_labels(labels), strict=True):
            ids = []
            for word in words:
                toks = self.tokenize(space + word) if space else self.tokenize(word)
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
        pieces = self._pieces(prompt, example)
        self._truncate(pieces)
        query: list[int] = []
        predict_at, trigger_at, soft_at = -1, [], []
        for kind, toks in pieces:
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
        word at ``[P]`` (as `word_table` spells it); soft slots belong to the query only."""
        ids: list[int] = []
        triggers = iter(prompt.trigger_ids)
        predicted = False
        for seg in prompt.template.segments:
            if seg.kind == "text" and not (predicted and not self.predict_tokens()):
                ids.extend(self.tokenize(seg.value))
            elif seg.kind == "field":
                ids.extend(self.tokenize(seg.space + demo.fields[seg.value]))
            elif seg.kind == "trigger":
                ids.append(next(triggers))
            elif seg.kind == "predict":
                word = prompt.verbalizer.words[demo.label][0]
                ids.extend(self.tokenize(seg.space + word) if seg.space else self.tokenize(word))
                predicted = True
        return ids

    def _pieces(self, prompt: Prompt, example: Example) -> list[Piece]:
        pieces: list[Piece] = []
        triggers = iter(prompt.trigger_ids)
        predict = self.predict_tokens()
        for seg in prompt.template.segments:
            if seg.kind == "text":
                if not predict and pieces and pieces[-1][0] == "predict":
                    continue  # text after an empty [P] (a causal LM's trailing whitespace) is never seen
                pieces.append(("text", list(self.tokenize(seg.value))))
            elif seg.kind == "field":
                try:
                    value = example.fields[seg.value]
                except KeyError:
                    raise AutopromptError(
                        f"template field {{{seg.value}}} is not in the example (fields: {list(example.fields)})"
                    ) from None
                pieces.append(("field", list(self.tokenize(seg.space + value))))
            elif seg.kind == "trigger":
                pieces.append(("trigger", [next(triggers)]))
            elif seg.kind == "soft":
                pieces.append(("soft", [self.pad_id]))
            else:
                pieces.append(("predict", list(predict)))
        return pieces

    def _truncate(self, pieces: list[Piece]) -> None:
        """Cut the longest field from its end until the sequence fits ``max_length``."""
        frame = len(self.prefix_special) + len(self.closing_tokens())
        excess = frame + RESERVED + sum(len(t) for _, t in pieces) - self.max_length
        while excess > 0:
            longest = max((p for p in pieces if p[0] == "field"), key=lambda p: len(p[1]), default=None)
            if longest is None or not longest[1]:
                raise AutopromptError(
                    f"the template alone is longer than max_length={self.max_length} tokens; shorten it"
                )
            cut = min(excess, len(longest[1]) - 1) or 1
            del longest[1][-cut:]
            excess -= cut
