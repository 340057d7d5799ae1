"""LAMA ranking speed on smollm2-135m: the trie vs today's first-token bound, side by side in one run.

Both rank all of a relation's candidate objects for each test fact with the manual template and
give the gold object's exact rank:

* ``first_token_bound`` (before): every multi-token object whose first token's log-prob is not
  below the gold object's full score is scored in full, each in its own continuation row (its own
  copy of the prompt's cache, every token of the word fed);
* ``trie`` (the evaluator's way now, `autoprompt.backends.trie`): the objects walked as a trie,
  one depth at a time, a node expanded only while its prefix can still outrank the gold object,
  each node fed once for all the words below it, all facts packed in one row.

P@1, P@10 and MRR must be identical (the run stops otherwise). Then the trie alone runs on
``--per-relation`` seeded test facts of every relation, and the full ``evaluate --task lama``
time is projected from each relation's facts/s times its test size (a projection, labelled so;
``--per-relation 0`` keeps an earlier run's).

``--group-columns 512,1024,...`` instead times the trie alone on ``--facts`` facts of each of the
comma-separated ``--relation``s at each width a group of facts' packed row may reach
(`autoprompt.backends.trie.GROUP_COLUMNS`), the widths interleaved over ``--repeats`` rounds, and
writes ``lama_groups_<dtype>.json``; in fp32 the metrics must be identical at every width.

``--dtype bf16`` runs the trie (and the projection) in bf16, the way ``evaluate --dtype bf16`` scores;
the baseline stays the fp32 first-token bound, and the metrics are compared instead of required equal
(bf16 rounds the log-probs, so near-ties can swap).

    python benchmarks/lama.py [--relation P19] [--facts 96] [--per-relation 32] [--dtype fp32|bf16]

Writes ``benchmarks/results/lama.json`` (``lama_bf16.json`` with ``--dtype bf16``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from autoprompt import Evaluator, load_model, load_task
from autoprompt.backends import causal
from autoprompt.backends import trie as packed_trie
from autoprompt.io import atomic_write_json
from autoprompt.results.versions import versions
from autoprompt.tasks import lama_relations, resolve_data_dir

RESULTS = Path(__file__).parent / "results"


def first_token_bound(lm, word_scores, cache, attn, flat, gold):
    """The ranking as it was: the gold word continued, then every word whose first-token bound
    reaches its score continued in full, one row per (fact, word)."""
    rows = range(len(gold))
    word_scores = word_scores + lm._continue(word_scores, cache, attn, flat,
                                             [(b, j) for b, j in zip(rows, gold) if len(flat[j]) > 1])
    bar = word_scores[torch.arange(len(gold)), torch.tensor(list(gold))]
    multi = [j for j, w in enumerate(flat) if len(w) > 1]
    rest = [(b, j) for b in rows for j in multi if j != gold[b] and word_scores[b, j] >= bar[b]]
    return word_scores + lm._continue(word_scores, cache, attn, flat, rest)


def timed(lm, relation: str, examples, ranking, dtype: str = "fp32") -> dict:
    task = load_task(f"lama:{relation}").task
    causal.outranking_gold = ranking  # the backend's ranking function, swapped for this measurement
    start = time.perf_counter()
    with lm.computing_in(dtype):
        result = Evaluator(lm, task, cache=False).score(task.default_prompt, examples)
    wall = time.perf_counter() - start
    return {"facts": len(examples), "wall_s": round(wall, 2), "facts_per_s": round(len(examples) / wall, 3),
            "p@1": result.score, "p@10": result.extra["p@10"], "mrr": result.extra["mrr"]}


def _command(args) -> str:
    """The command line that reproduces this run."""
    return "python benchmarks/lama.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())


def sweep_groups(lm, args) -> None:
    """The trie's facts/s at each ``--group-columns`` width, interleaved so drift hits every width alike."""
    widths = [int(w) for w in args.group_columns.split(",")]
    rows = []
    for relation in args.relation.split(","):
        test = load_task(f"lama:{relation}").test
        examples = random.Random(0).sample(test, min(args.facts, len(test)))
        timed(lm, relation, examples[:4], causal.outranking_gold, args.dtype)  # warm-up
        walls: dict[int, list[float]] = {w: [] for w in widths}
        metrics = set()
        for _ in range(args.repeats):
            for width in widths:
                packed_trie.GROUP_COLUMNS = width
                run = timed(lm, relation, examples, causal.outranking_gold, args.dtype)
                walls[width].append(run["wall_s"])
                metrics.add((run["p@1"], run["p@10"], run["mrr"]))
                print(relation, width, run, flush=True)
        if len(metrics) > 1 and args.dtype == "fp32":
            raise SystemExit(f"{relation}: the metrics differ across widths: {metrics}")
        rows += [{"relation": relation, "facts": len(examples), "group_columns": w, "walls_s": walls[w],
                  "best_wall_s": min(walls[w]), "facts_per_s": round(len(examples) / min(walls[w]), 3)}
                 for w in widths]
    command = _command(args)
    atomic_write_json(RESULTS / f"lama_groups_{args.dtype}.json", {
        "model": lm.name, "torch_threads": torch.get_num_threads(), "versions": versions(), "command": command,
        "dtype": args.dtype, "default_group_columns": packed_trie.GROUP_COLUMNS, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--relation", default="P19")
    parser.add_argument("--facts", type=int, default=96, help="seeded sample of the relation's test facts")
    parser.add_argument("--per-relation", type=int, default=32, help="facts per relation for the projection; 0 skips")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="what the trie computes in")
    parser.add_argument("--group-columns", default="", help="comma-separated widths to time instead (see above)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the --group-columns sweep")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    if args.group_columns:
        sweep_groups(lm, args)
        return
    trie = causal.outranking_gold
    data = load_task(f"lama:{args.relation}")
    examples = random.Random(0).sample(data.test, min(args.facts, len(data.test)))
    timed(lm, args.relation, examples[:4], trie, args.dtype)  # warm-up: first forwards, word tables
    before = timed(lm, args.relation, examples, first_token_bound)
    after = timed(lm, args.relation, examples, trie, args.dtype)
    same = all(before[k] == after[k] for k in ("p@1", "p@10", "mrr"))
    print({"before": before, "after": after, "speedup": round(after["facts_per_s"] / before["facts_per_s"], 2)})
    if not same and args.dtype == "fp32":
        raise SystemExit(f"the trie ranks differently: {before} vs {after}")
    relations, relations_command = [], None
    if args.per_relation:
        for relation in lama_relations(resolve_data_dir(None)):
            test = load_task(f"lama:{relation}").test
            sample = random.Random(0).sample(test, min(args.per_relation, len(test)))
            row = {"relation": relation, "test_facts": len(test), **timed(lm, relation, sample, trie, args.dtype)}
            print(row, flush=True)
            relations.append(row)
    out = RESULTS / ("lama.json" if args.dtype == "fp32" else f"lama_{args.dtype}.json")
    if not relations and out.exists():  # --per-relation 0: keep the projection of an earlier run
        earlier = json.loads(out.read_text())
        relations = earlier.get("relations", [])
        relations_command = earlier.get("relations_command") or earlier.get("command")
    projected = sum(r["test_facts"] / r["facts_per_s"] for r in relations)
    command = _command(args)
    atomic_write_json(out, {
        "model": lm.name, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "versions": versions(), "command": command,
        "relation": args.relation, "dtype": {"before": "fp32", "after": args.dtype}, "before": before, "after": after,
        "speedup": round(after["facts_per_s"] / before["facts_per_s"], 2), "identical_metrics": same,
        "relations": relations, "relations_command": relations_command or command,
        "test_facts_total": sum(r["test_facts"] for r in relations),
        "projected_full_evaluate_s": round(projected) if relations else None})


if __name__ == "__main__":
    main()
