"""Encoding equals the tokenization of the rendered text wherever no slot forces a boundary.

Property tests (hypothesis) over templates and texts, on a byte-level BPE, a sentencepiece-style
unigram tokenizer with a dummy prefix (where tokenizing segments apart adds a word-boundary piece
at every join) and a WordPiece masked LM. The same checks run on Gemma's real tokenizer in
`test_real_model.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autoprompt.backends.encoding import RESERVED
from autoprompt.prompts import Prompt, Template, Verbalizer
from autoprompt.tasks.base import Example
from autoprompt.tasks.builtin import BUILTIN, MODEL_PROMPTS
from autoprompt.testing.tiny import tiny_causal_lm, tiny_masked_lm

WORDS = ["the", "movie", "was", "great", "bad", "It", "Review", "Answer", "good", "plot", "A", "x", "é", "42"]
LABEL_WORDS = ["great", "bad", "good", "movie", "was", "the"]  # in the tiny tokenizers' vocabularies
JOINS = [" ", "", "  ", "\n", ". ", ", ", ":", "? ", "!", "'s "]


@functools.cache
def backend(kind: str) -> Any:
    if kind == "masked":
        return tiny_masked_lm()
    return tiny_causal_lm(tokenizer_kind=kind)


def text_before_predict(template: Template, fields: dict[str, str]) -> str:
    """The rendered text the model reads before ``[P]`` (without the space in front of the slot)."""
    out = []
    for seg in template.segments:
        if seg.kind == "predict":
            break
        out.append(seg.value if seg.kind == "text" else seg.space + fields[seg.value])
    return "".join(out)


def query_ids(lm: Any, prompt: Prompt, example: Example) -> tuple[int, ...]:
    encoded = lm.encode(prompt, example)
    return encoded.ids[len(lm.prefix_special):encoded.predict_at]


phrase = st.lists(st.tuples(st.sampled_from(JOINS), st.sampled_from(WORDS)), min_size=0, max_size=6).map(
    lambda parts: "".join(j + w for j, w in parts))


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A template source with fields ``a``/``b`` and ``[P]`` last, and values for its fields."""
    chunks = draw(st.lists(st.tuples(phrase, st.sampled_from(["a", "b"]), st.sampled_from(["", " ", "\n"])),
                           min_size=1, max_size=3))
    source = "".join(text + space + "{" + name + "}" for text, name, space in chunks)
    source += draw(phrase) + draw(st.sampled_from([" ", ""])) + "[P]"
    fields = {"a": draw(phrase.filter(bool)), "b": draw(phrase.filter(bool))}
    return source, fields


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "masked"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=templates())
def test_the_query_is_tokenized_as_its_rendered_text(kind: str, case: tuple[str, dict[str, str]]) -> None:
    lm = backend(kind)
    source, fields = case
    prompt = Prompt(Template(source), Verbalizer({"n": ["bad"], "p": ["good"]}))
    expected = lm.tokenize(text_before_predict(prompt.template, fields))
    assume(len(expected) + RESERVED + 2 <= lm.max_length)  # not truncated (that is the last test)
    assert query_ids(lm, prompt, Example(fields, 1)) == expected


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
@settings(max_examples=60, deadline=None)
@given(before=phrase.filter(bool), space=st.sampled_from([" ", ""]), word=st.sampled_from(LABEL_WORDS))
def test_label_words_are_scored_as_they_tokenize_after_the_prompt(kind: str, before: str, space: str,
                                                                  word: str) -> None:
    lm = backend(kind)
    other = "good" if word.strip() != "good" else "bad"  # two classes never share a word
    prompt = Prompt(Template("{a}" + before + space + "[P]"), Verbalizer({"n": [word], "p": [other]}))
    [[ids], _] = lm.word_table(prompt, ("n", "p"))
    query = query_ids(lm, prompt, Example({"a": "the plot"}, 0))
    whole = lm.tokenize("the plot" + before + space + word)
    if whole[: len(query)] == query:  # the word does not merge into the prompt's last token
        assert ids == whole[len(query):]


def test_a_sentencepiece_template_has_no_boundary_piece_at_its_joins() -> None:
    """The bug this encoding fixes: tokenized apart, the '.' after a field became '▁ .' ."""
    lm = backend("sentencepiece")
    prompt = Prompt(Template("{a}. It was [P]"), Verbalizer({"n": ["bad"], "p": ["good"]}))
    ids = query_ids(lm, prompt, Example({"a": "the movie was good"}, 1))
    apart = lm.tokenize("the movie was good") + lm.tokenize(".") + lm.tokenize(" It was")
    assert ids == lm.tokenize("the movie was good. It was") != apart


MANUAL = [(name, entry.task.template) for name, entry in BUILTIN.items()] + \
    [(task, template) for (_, task), (template, _) in MODEL_PROMPTS.items()]


@pytest.mark.parametrize(("task", "template"), MANUAL)
def test_bpe_encoding_is_unchanged_on_the_manual_templates(task: str, template: str) -> None:
    """On a BPE tokenizer the manual templates' segments meet at word boundaries, so the joined
    encoding equals tokenizing segment by segment, as it was done before."""
    lm = backend("bpe")
    prompt = Prompt(Template(template), Verbalizer(BUILTIN[task].task.verbalizer))
    fields = {name: "the movie was good . It was great" for name in prompt.template.fields}
    apart: list[int] = []
    for seg in prompt.template.segments:
        if seg.kind == "predict":
            break
        apart += lm.tokenize(seg.value if seg.kind == "text" else seg.space + fields[seg.value])
    assert list(query_ids(lm, prompt, Example(fields, 0))) == apart


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "masked"])
def test_a_long_field_is_cut_as_text_and_the_run_retokenized(kind: str) -> None:
    lm = backend(kind)
    prompt = Prompt(Template("Review: {a} It was [P]"), Verbalizer({"n": ["bad"], "p": ["good"]}))
    long = " ".join(["the movie was great."] * 80)
    encoded = lm.encode(prompt, Example({"a": long}, 1))
    assert len(encoded.ids) + RESERVED <= lm.max_length
    ids = encoded.ids[len(lm.prefix_special):encoded.predict_at]
    text = lm.decode(ids)
    if kind == "masked":  # WordPiece lower-cases and splits punctuation: only the frame is checked
        assert text.startswith("review :") and text.endswith("it was")
        return
    assert text.startswith("Review: the movie") and text.endswith(" It was")
    kept = text[len("Review: "):-len(" It was")]
    assert long.startswith(kept)  # the field's own text, cut
    assert lm.tokenize(text) == ids  # the run was tokenized whole after the cut
