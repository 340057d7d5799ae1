"""KATE (Liu et al., 2022): for each query, the pool demonstrations nearest to it.

Similarity is the cosine of the frozen model's own sentence embeddings (the mean of its last
hidden states over the input text; no second model). A pool example with the same fields as the
query is never its own demonstration: scoring a train example with its own label shown would
leak the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from autoprompt.backends import LanguageModel
from autoprompt.prompts import Demonstration, Prompt
from autoprompt.scoring.budget import Budget


def input_text(fields: Mapping[str, str], names: Sequence[str]) -> str:
    """The text a retrieval embedding is computed from: the input fields, in template order."""
    return " ".join(fields[n] for n in names)


class Retriever:
    """Nearest pool demonstrations per query, with embeddings remembered per text.

    Args:
        lm: the frozen model whose embeddings measure similarity.
        batch_size: texts per embedding forward.
    """

    def __init__(self, lm: LanguageModel, batch_size: int = 32) -> None:
        self.lm, self.batch_size = lm, batch_size
        self._known: dict[str, Tensor] = {}

    def embeddings(self, texts: Sequence[str], budget: Budget | None = None) -> Tensor:
        """``[N, H]`` unit-length embeddings; texts not seen before cost one example-forward each."""
        new = list(dict.fromkeys(t for t in texts if t not in self._known))
        if new:
            tokenized = [self.lm.tokenize(t)[: self.lm.max_length] or self.lm.tokenize(" ") for t in new]
            if budget is not None:
                budget.require(forwards=len(new))
            by_length = sorted(range(len(new)), key=lambda i: len(tokenized[i]))  # batches of like lengths pad little
            for start in range(0, len(new), self.batch_size):
                rows = by_length[start : start + self.batch_size]
                vectors = self.lm.sentence_embeddings([tokenized[i] for i in rows])
                for i, v in zip(rows, vectors, strict=True):
                    self._known[new[i]] = torch.nn.functional.normalize(v.float().cpu(), dim=0)
            if budget is not None:
                budget.charge(forwards=len(new), tokens=sum(len(t) for t in tokenized))
        return torch.stack([self._known[t] for t in texts])

    def choose(self, prompt: Prompt, queries: Sequence[Mapping[str, str]],
               budget: Budget | None = None) -> list[list[Demonstration]]:
        """Per query, the prompt's ``k`` nearest pool demonstrations, ordered so the nearest stands
        next to the query (last before it on a causal LM, first after it on a masked LM)."""
        demos = prompt.demos
        assert demos is not None and demos.per_query  # the evaluator asks only for pool prompts
        names = prompt.template.fields
        pool_texts = [input_text(d.fields, names) for d in demos.pool]
        query_texts = [input_text(q, names) for q in queries]
        similarity = self.embeddings(query_texts, budget) @ self.embeddings(pool_texts, budget).T   # [Q, P]
        for q, text in enumerate(query_texts):  # never the query itself
            similarity[q, [i for i, t in enumerate(pool_texts) if t == text]] = -float("inf")
        k = min(demos.k, len(demos.pool))
        top = similarity.topk(k, dim=-1)                                           # [Q, k], nearest first
        after_query = self.lm.kind == "masked"
        chosen = []
        for values, row in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            kept = [demos.pool[i] for v, i in zip(values, row, strict=True) if v > -float("inf")]
            chosen.append(kept if after_query else kept[::-1])
        return chosen
