"""Ranking many multi-token words against the gold one: a trie walked in one packed sequence.

LAMA scores hundreds of candidate objects per fact, most of them several tokens long, and its
metrics (P@k, MRR) only need the gold object's rank. The log-prob of a word's first ``d`` tokens
bounds its full score from above, so the words are walked as a trie of token sequences, one depth
at a time, and a node (a fact and a token prefix) whose score is already below the gold word's is
not expanded: the words under it cannot outrank the gold one.

Every expanded node is one token fed once, whatever the number of words below it. A group of facts
lives in one packed row: their prompts' key/value caches side by side, then every fed node, each
attending (through a custom 4D mask) to its own fact's prompt and its ancestors only. So the nodes
of a group's facts at one depth run as one forward with no padding and no per-node cache copies;
siblings never see each other, which makes the result the same as feeding each path on its own.
Groups (`GROUP_COLUMNS`) keep a row narrow where many words stay open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from autoprompt.backends.kv_cache import cache_layers, make_cache, select_rows

Node = tuple[int, tuple[int, ...]]  # (fact row, token prefix)


class CausalLM(Protocol):
    """What the trie needs of `autoprompt.backends.causal.CausalLM` (which calls it)."""

    model: torch.nn.Module
    device: torch.device
    working_memory: int

    def _forward(self, ids: Tensor | None, attn: Tensor, positions: Tensor, cache: Any = None,
                 keep: int | Tensor | None = None, inputs_embeds: Tensor | None = None) -> tuple[Tensor, Any]: ...
    def attention_mask_4d(self, allowed: Tensor) -> Tensor: ...
    def embedding_matrix(self) -> Tensor: ...


class PackedTrie:
    """The fed trie nodes of a batch of facts on top of their prompts' caches, packed in one row.

    Args:
        lm: the causal LM (its ``_forward`` runs the nodes).
        cache: the prompts' key/value cache, ``[B, heads, L, d]`` per layer.
        attn: the prompts' attention mask ``[B, L]`` (left padding allowed).
        children: per token prefix, the next tokens of the words that continue it.
    """

    def __init__(self, lm: CausalLM, cache: Any, attn: Tensor, children: dict[tuple[int, ...], list[int]]) -> None:
        self.lm, self.children = lm, children
        batch, width = attn.shape
        # [B, h, L, d] → [1, h, B * L, d]: fact b's prompt is columns b*L .. b*L + L - 1
        self.cache = make_cache([(k.transpose(0, 1).reshape(1, k.shape[1], -1, k.shape[-1]),
                                  v.transpose(0, 1).reshape(1, v.shape[1], -1, v.shape[-1]))
                                 for k, v in cache_layers(cache)])
        self.prompt_fact = torch.arange(batch, device=attn.device).repeat_interleave(width)   # [B * L]
        self.prompt_real = attn.reshape(-1).bool()                                           # [B * L]
        self.lengths = attn.sum(-1)                                                          # [B]
        self.columns: dict[Node, int] = {}
        self.next_logp: dict[Node, dict[int, float]] = {}  # per fed node: its children's log-probs
        self.width = batch * width

    def feed(self, nodes: Sequence[Node], step: int) -> None:
        """Run ``nodes`` (parents first, or already fed) in chunks of ``step`` tokens."""
        nodes = sorted({n for n in nodes if n not in self.columns}, key=lambda n: len(n[1]))
        for start in range(0, len(nodes), step):
            self._run(nodes[start : start + step])

    def _run(self, nodes: list[Node]) -> None:
        device = self.lm.device
        for i, node in enumerate(nodes):
            self.columns[node] = self.width + i
        q, total = len(nodes), self.width + len(nodes)
        facts = torch.tensor([b for b, _ in nodes], device=device)
        allowed = torch.zeros(q, total, dtype=torch.bool, device=device)                    # [q, kv]
        allowed[:, : len(self.prompt_fact)] = (self.prompt_fact[None] == facts[:, None]) & self.prompt_real[None]
        rows, cols = zip(*[(i, self.columns[(b, prefix[:d])]) for i, (b, prefix) in enumerate(nodes)
                           for d in range(1, len(prefix) + 1)], strict=True)
        allowed[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True  # ancestors, itself
        ids = torch.tensor([[prefix[-1] for _, prefix in nodes]], device=device)             # [1, q]
        positions = (self.lengths[facts] + torch.tensor([len(p) - 1 for _, p in nodes], device=device))[None]
        mask = self.lm.attention_mask_4d(allowed)
        logits, self.cache = self.lm._forward(ids, mask, positions, cache=self.cache)           # [1, q, V]
        logp = logits[0].log_softmax(-1)
        for i, (b, prefix) in enumerate(nodes):
            tokens = self.children.get(prefix, [])
            self.next_logp[(b, prefix)] = dict(zip(tokens, logp[i, tokens].tolist(), strict=True))
        self.width = total


def _nodes_per_forward(lm: CausalLM, columns: int) -> int:
    """Nodes one forward may feed within the working memory: each holds a row of attention
    scores per head over ``columns`` and its logits and log-probs over the vocabulary."""
    config: Any = lm.model.config
    heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    vocab = lm.embedding_matrix().shape[0]
    return max(16, min(1024, lm.working_memory // (4 * (heads * columns + 2 * vocab))))


#: the columns a forward's node count is sized for beyond its row's present width: the nodes fed before
NODE_ROOM = 2048

GROUP_COLUMNS = 2048
"""How wide a packed row the open words of a group of facts may make (prompt columns plus nodes).

A fed node attends over its whole packed row (the mask, not the arithmetic, keeps it to its own
fact), so one row holding every fact of a batch makes each node's attention as costly as the MLP on
relations where many objects outrank the gold one (P190: ~93 nodes a fact, rows of 3,000+ columns).
Groups of facts, each in its own row, keep that share small; much smaller groups feed too few nodes
per forward to use the matmuls well. Timed with `benchmarks/lama.py --group-columns` (bf16, 64 facts,
2 threads; ranks are exact at any width), P190 + P19: 34.9 s at 512, 31.9 at 1024, 29.4 at 2048; a second
sweep 26.6 at 2048, 26.0 at 4096, 31.3 at 8192 — the narrower of the two equal ones kept.
"""


def outranking_gold(lm: CausalLM, first: Tensor, cache: Any, attn: Tensor, words: Sequence[tuple[int, ...]],
                    gold: Sequence[int]) -> Tensor:
    """``[B, W]`` word scores from first-token scores ``first``: exact for the gold word and every
    word that can outrank it, an upper bound below the gold word's score for the rest."""
    children: dict[tuple[int, ...], list[int]] = {}
    for w in set(words):
        for d in range(1, len(w)):
            children.setdefault(w[:d], []).append(w[d])
    children = {prefix: sorted(set(tokens)) for prefix, tokens in children.items()}
    trie = PackedTrie(lm, cache, attn, children)
    scores = first.clone().cpu()
    # the gold words first (their paths in one go): their scores are the bars
    trie.feed([(b, words[g][:d]) for b, g in enumerate(gold) for d in range(1, len(words[g]))],
              _nodes_per_forward(lm, attn.numel() + NODE_ROOM))
    for b, g in enumerate(gold):
        w = words[g]
        scores[b, g] += sum(trie.next_logp[(b, w[:d])][w[d]] for d in range(1, len(w)))
    bar = scores[torch.arange(len(gold)), torch.tensor(list(gold))]                            # [B]
    lengths = torch.tensor([len(w) for w in words])
    open_ = (scores >= bar[:, None]) & (lengths[None] > 1)                                     # [B, W]
    open_[torch.arange(len(gold)), torch.tensor(list(gold))] = False
    groups = _fact_groups(open_, words, attn.shape[1], GROUP_COLUMNS)
    for facts in groups:
        rows, trie_rows = torch.tensor(facts), facts
        if len(groups) > 1:  # each group in its own packed row (the gold paths fed again where shared)
            on_device = rows.to(attn.device)
            trie = PackedTrie(lm, select_rows(cache, on_device), attn[on_device], children)
            trie_rows = list(range(len(facts)))
        scores[rows] = _walk(trie, scores[rows], bar[rows], open_[rows], words, lengths,
                             _nodes_per_forward(lm, trie.width + NODE_ROOM), trie_rows)
    return scores.to(first.device)


def _fact_groups(open_: Tensor, words: Sequence[tuple[int, ...]], width: int, columns: int) -> list[list[int]]:
    """The facts with open words, in order, in groups whose packed rows stay within ``columns``:
    a fact counts its prompt's ``width`` and every prefix its open words could feed (an upper bound)."""
    groups: list[list[int]] = []
    used = columns
    for b in open_.any(-1).nonzero().flatten().tolist():
        cost = width + len({words[j][:d] for j in open_[b].nonzero().flatten().tolist()
                            for d in range(1, len(words[j]))})
        if used + cost > columns:
            groups.append([])
            used = 0
        groups[-1].append(b)
        used += cost
    return groups


def _walk(trie: PackedTrie, scores: Tensor, bar: Tensor, open_: Tensor, words: Sequence[tuple[int, ...]],
          lengths: Tensor, step: int, trie_rows: list[int]) -> Tensor:
    """``scores`` ``[G, W]`` of a group of facts (row ``i`` is ``trie_rows[i]`` in ``trie``) with every
    ``open_`` word continued depth by depth while it can still reach its fact's ``bar``."""
    depth = 1
    while bool(open_.any()):
        pairs = open_.nonzero().tolist()
        nodes = [(trie_rows[i], words[j][:depth]) for i, j in pairs]
        trie.feed(nodes, step)
        added = torch.tensor([trie.next_logp[node][words[j][depth]] for node, (_, j) in zip(nodes, pairs, strict=True)])
        i_idx, j_idx = torch.tensor(pairs).T
        scores = scores.index_put((i_idx, j_idx), added, accumulate=True)
        depth += 1
        open_ = torch.zeros_like(open_)
        still = (scores[i_idx, j_idx] >= bar[i_idx]) & (lengths[j_idx] > depth)
        open_[i_idx[still], j_idx[still]] = True
    return scores
