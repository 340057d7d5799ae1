"""Class scores do not depend on how examples are batched: batch sizes 1, 4 and 32, left or right
padding, with triggers, soft slots, a key/value prefix and demonstrations, on the tiny masked and
causal models (1e-5 in fp32); the real model's check (64 SST-2 examples) is in `test_real_model.py`."""

from __future__ import annotations

import pytest
import torch

from autoprompt import Demonstration, Demonstrations, Evaluator, Prompt, SoftPrompt
from autoprompt.testing import tiny_causal_lm, tiny_masked_lm

WORDS = {"negative": ["bad"], "positive": ["good", "great"]}


def _prompts(lm) -> dict[str, Prompt]:
    torch.manual_seed(0)
    width = lm.embedding_matrix().shape[1]
    ids = lm.tokenize(" movie film")
    demos = Demonstrations((Demonstration({"sentence": "the cat was nice"}, "positive"),
                            Demonstration({"sentence": "a dull long evening"}, "negative")))
    end = " It was [P]" if lm.kind == "causal" else " It was [P] ."
    prompts = {
        "plain": Prompt("{sentence}" + end, WORDS),
        "triggers": Prompt("{sentence} [T] [T]" + end, WORDS, trigger_ids=ids[:2]),
        "soft slots": Prompt("[S] [S] [S] {sentence}" + end, WORDS, soft=SoftPrompt(slots=0.1 * torch.randn(3, width))),
        "demonstrations": Prompt("{sentence}" + end, WORDS, demos=demos),
    }
    if lm.kind == "causal":
        prompts["prefix"] = Prompt("{sentence}" + end, WORDS, soft=SoftPrompt(prefix=lm.prefix_from_text(ids)))
    return prompts


MODELS = {"causal-left": lambda: tiny_causal_lm("llama", padding_side="left"),
          "causal-right": lambda: tiny_causal_lm("llama", padding_side="right"),
          "gpt2": lambda: tiny_causal_lm("gpt2"),
          "masked": tiny_masked_lm}


@pytest.fixture(scope="module", params=list(MODELS))
def scored(request, task):
    """``{prompt name: {batch size: [N, C] class log-probs}}`` on the tiny task's test split."""
    lm = MODELS[request.param]()
    return request.param, {name: {b: Evaluator(lm, task.task, batch_size=b, cache=False).score(p, task.test).logprobs
                                  for b in (1, 4, 32)}
                           for name, p in _prompts(lm).items()}


def test_class_scores_are_the_same_at_every_batch_size(scored):
    model, by_prompt = scored
    for name, by_batch in by_prompt.items():
        for b in (4, 32):
            gap = (by_batch[b] - by_batch[1]).abs().max().item()
            assert gap <= 1e-5, f"{model}, {name}: batch {b} differs from batch 1 by {gap:.2e}"


def test_class_scores_do_not_depend_on_the_padding_side(task):
    left, right = (tiny_causal_lm("llama", padding_side=side) for side in ("left", "right"))
    for name, prompt in _prompts(left).items():
        a = Evaluator(left, task.task, batch_size=32).score(prompt, task.test).logprobs
        b = Evaluator(right, task.task, batch_size=32).score(prompt, task.test).logprobs
        assert (a - b).abs().max().item() <= 1e-5, name
