"""Vocabulary filters: which tokens may be a trigger or a label word.

AutoPrompt keeps candidates to real words; a trigger must also survive decode → encode, or the
prompt a user copies would tokenize differently from the prompt that was scored.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def word_start_tokens(tokenizer: Any, vocab_size: int) -> Tensor:
    """``[V]`` bool: tokens that begin a whole alphabetic word (``Ġgreat``, ``great``; not ``##s``)."""
    keep = torch.zeros(vocab_size, dtype=torch.bool)
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    special = set(tokenizer.all_special_ids)
    # WordPiece marks continuations with ##; BPE/sentencepiece mark word starts with a space
    # (a BPE vocabulary holds a few "##..." tokens of its own, e.g. Markdown headings)
    wordpiece = sum(bool(t) and t.startswith("##") for t in tokens) > 0.05 * len(tokens)
    for i, tok in enumerate(tokens):
        if tok is None or i in special or (wordpiece and tok.startswith("##")):
            continue
        text = tokenizer.convert_tokens_to_string([tok])  # bytes → text for byte-level BPE
        if not wordpiece:
            if not text.startswith(" "):
                continue
            text = text[1:]
        keep[i] = len(text) >= 2 and text.isascii() and text.isalpha()
    return keep


def stable_tokens(tokenizer: Any, candidates: Tensor) -> Tensor:
    """``[V]`` bool: the ``candidates`` whose decoded text encodes back to that one token."""
    keep = candidates.clone()
    ids = keep.nonzero()[:, 0].tolist()
    texts = [tokenizer.decode([i]) for i in ids]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for i, toks in zip(ids, encoded, strict=True):
        keep[i] = list(toks) == [i]
    return keep
