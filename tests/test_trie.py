"""LAMA's ranking over a trie of the candidates' tokens: the same ranks and scores as scoring every word in full."""

import pytest
import torch

from autoprompt import Prompt
from autoprompt.backends import trie
from autoprompt.testing import tiny_causal_lm

CITIES = ["San Diego", "San Jose", "San Francisco", "Santa Fe", "Santa Cruz", "New York", "New Delhi", "Newark",
          "Paris", "Parma", "Los Angeles", "Lisbon", "London", "Londonderry", "Berlin", "Bern", "Bergamo",
          "Buenos Aires", "Bucharest", "Budapest", "Saint Petersburg", "Saint Louis", "Sao Paulo", "Seoul",
          "Tokyo", "Toronto", "Turin", "Rome", "Rotterdam", "Rio de Janeiro"]
SUBJECTS = ["Ada Lovelace", "Alan Turing", "Marie Curie", "Grace Hopper", "Niels Bohr", "Emmy Noether",
            "Kurt Godel", "Lise Meitner", "Paul Dirac", "Rosalind Franklin", "Enrico Fermi", "Max Born"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("working_memory", [None, 1])  # 1 byte: the smallest chunks, paths across forwards
@pytest.mark.parametrize("group_columns", [None, 40, 1])  # one packed row; a few facts a row; a fact a row
def test_trie_ranking_equals_scoring_every_word_in_full(arch, working_memory, group_columns, monkeypatch):
    if group_columns is not None:
        monkeypatch.setattr(trie, "GROUP_COLUMNS", group_columns)
    lm = tiny_causal_lm(arch, working_memory=working_memory)
    prompt = Prompt("{subject} was born in [P]", {c: [c] for c in CITIES})
    table = lm.word_table(prompt, CITIES)
    assert sum(len(ws[0]) > 1 for ws in table) > 20 and len({ws[0][0] for ws in table}) < len(CITIES)  # shared prefixes
    from autoprompt.tasks.base import Example  # noqa: PLC0415

    examples = [Example({"subject": s}, i * 7 % len(CITIES)) for i, s in enumerate(SUBJECTS)]
    batch = [lm.encode(prompt, ex) for ex in examples]
    gold = [ex.label for ex in examples]
    full = lm.label_logprobs(batch, table).logprobs                       # every word scored in full [B, C]
    ranked = lm.label_logprobs(batch, table, gold=gold).logprobs          # the trie, pruned at the gold's score
    rows = torch.arange(len(gold))
    bar_full, bar = full[rows, gold], ranked[rows, gold]
    torch.testing.assert_close(bar, bar_full, atol=1e-5, rtol=0)
    assert ((full > bar_full[:, None]).sum(-1) == (ranked > bar[:, None]).sum(-1)).all()   # the gold's rank
    exact = ranked >= bar[:, None]
    torch.testing.assert_close(ranked[exact], full[exact], atol=1e-5, rtol=0)             # outranking words: exact
    assert (ranked[~exact] >= full[~exact] - 1e-5).all()                                 # the rest: upper bounds
    assert 0 < int(exact.sum()) < exact.numel()                                           # both cases occur


def test_facts_are_grouped_so_each_packed_row_stays_within_its_columns():
    words = [(1,), (2, 3), (2, 4, 5), (6, 7, 8, 9)]
    open_ = torch.tensor([[False, True, True, False],    # prefixes (2,), (2, 4): 2 nodes at most
                          [False, False, False, False],  # nothing open: in no group
                          [False, False, False, True],   # (6,), (6, 7), (6, 7, 8): 3
                          [False, True, False, False]])  # (2,): 1
    assert trie._fact_groups(open_, words, width=5, columns=100) == [[0, 2, 3]]
    assert trie._fact_groups(open_, words, width=5, columns=15) == [[0, 2], [3]]   # 7 + 8, then 6
    assert trie._fact_groups(open_, words, width=5, columns=1) == [[0], [2], [3]]  # wider than any: one a row
