"""Candidate re-scoring throughput of the gradient search on smollm2-135m, SST-2.

One re-scoring step scores the current triggers and 10 candidates (5 triggers, single-token
swaps) on a batch of train examples. The candidates are made as the search makes them: with
``positions=random`` (the paper) all swap the same trigger position; with ``positions=all``
(GCG-style) each swaps a position of its own. Measured side by side in one run:

* ``autoprompt_way``: one full forward per candidate per batch, the LM head over every position,
  as AutoPrompt's code does;
* ``batched``: all candidates as one evaluator job, without prefix sharing;
* ``shared_prefix``: the evaluator's default on causal LMs: each example's tokens up to the first
  changed one run once, only the rest runs per candidate;
* ``floor``: only that per-candidate rest, as one forward on a ready cache (no prefix pass, no
  copies, no scoring): what no exact method can go below;
* ``shared_prefix_bf16``: the evaluator's default inside ``lm.computing_in("bf16")``, as a search with
  ``--dtype bf16`` (or ``auto`` on a CPU with AVX-512 BF16/AMX) ranks its candidates: the speed-up
  over AutoPrompt's way is given beside the fp32 one, said as such (``--no-bf16`` leaves it out).

Two templates: AutoPrompt's (``{sentence} [T]x5 [P]``) and the task's manual one with the
triggers after the sentence. Writes ``benchmarks/results/search.json``.

    python benchmarks/search.py [--batch 32] [--repeats 3] [--working-memory-mib 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from autoprompt import Evaluator, Prompt, load_model, load_task
from autoprompt.backends.kv_cache import select_rows
from autoprompt.io import atomic_write_json
from autoprompt.results.versions import versions
from autoprompt.scoring.batching import common_prefix
from autoprompt.search import with_triggers


@torch.inference_mode()
def autoprompt_way(lm, prompts, examples, labels) -> None:
    """AutoPrompt's loop: per candidate, a full forward of the batch and the label log-probs."""
    for prompt in prompts:
        table = lm.word_table(prompt, labels)
        ids, mask = lm.pad([lm.encode(prompt, ex).ids for ex in examples], left=False)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits                 # [B, L, V]
        last = logits[torch.arange(len(examples)), mask.sum(-1) - 1].log_softmax(-1)
        _ = last[:, [ws[0][0] for ws in table]]


class Floor:
    """The suffix forward of every (example, candidate) row on a cache prepared beforehand."""

    def __init__(self, lm, prompts, examples) -> None:
        self.lm = lm
        encoded = [[lm.encode(p, ex).ids for p in prompts] for ex in examples]
        shared = [common_prefix(rows) for rows in encoded]
        self.prefix_ids, self.prefix_mask = lm.pad([rows[0][:n] for rows, n in zip(encoded, shared, strict=True)],
                                                   left=True)
        self.k = len(prompts)
        self.ids, self.mask = lm.pad([r[n:] for rows, n in zip(encoded, shared, strict=True) for r in rows])

    @torch.inference_mode()
    def prepare(self):
        """The prefix cache, one copy per row (not timed)."""
        lm = self.lm
        _, cache = lm._forward(self.prefix_ids, self.prefix_mask, (self.prefix_mask.cumsum(-1) - 1).clamp(min=0),
                               keep=1)
        rows = torch.arange(len(self.prefix_ids)).repeat_interleave(self.k)
        return select_rows(cache, rows), self.prefix_mask.index_select(0, rows)

    @torch.inference_mode()
    def __call__(self, cache, prefix_mask) -> None:
        mask = torch.cat([prefix_mask, self.mask], dim=1)
        positions = prefix_mask.sum(-1)[:, None] + torch.arange(self.ids.shape[1])
        self.lm._forward(self.ids, mask, positions, cache=cache, keep=1)


def bf16_scores(lm, task, prompts, examples) -> None:
    """The evaluator's default (shared prefix) in bf16, as a search ranks candidates with ``dtype=bf16``."""
    with lm.computing_in("bf16"):
        Evaluator(lm, task, cache=False).score_many(prompts, examples)


def candidates(current: Prompt, vocab: list[int], n: int, positions: str, rng: random.Random) -> list[Prompt]:
    """The current prompt and ``n`` single-token swaps: at one random position, or each at its own."""
    where = rng.randrange(len(current.trigger_ids))
    out = [current]
    for _ in range(n):
        cand = list(current.trigger_ids)
        cand[where if positions == "random" else rng.randrange(len(cand))] = rng.choice(vocab)
        out.append(current.with_triggers(cand))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--triggers", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--working-memory-mib", type=int, default=None)
    parser.add_argument("--no-bf16", action="store_true", help="leave out the bf16 row (a CPU without bf16)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "search.json"))
    args = parser.parse_args()

    lm = load_model(args.model)
    if args.working_memory_mib:
        lm.working_memory = args.working_memory_mib * 2**20
    data = load_task("sst2", shots=16, data_seed=13)
    examples = data.train[: args.batch]
    vocab = lm.word_start_tokens().nonzero()[:, 0].tolist()
    rng = random.Random(0)
    the = lm.tokenize(" the")[0]
    report = {"model": args.model, "task": "sst2 (16-shot train, seed 13)", "batch": len(examples),
              "candidates": args.candidates, "triggers": args.triggers,
              "device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                         else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"),
              "working_memory_mib": lm.working_memory // 2**20, "versions": versions(), "templates": {}}
    manual = data.task.default_prompt
    templates = {"autoprompt": "{sentence}" + " [T]" * args.triggers + " [P]",
                 "manual+triggers": with_triggers(manual.template, args.triggers).source}
    for label, template in templates.items():
        current = Prompt(template, manual.verbalizer, (the,) * args.triggers)
        for positions in ("random", "all"):
            prompts = candidates(current, vocab, args.candidates, positions, rng)
            floor = Floor(lm, prompts, examples)
            runs = {
                "autoprompt_way": lambda prompts=prompts: autoprompt_way(lm, prompts, examples, data.task.labels),
                "batched": lambda prompts=prompts: Evaluator(lm, data.task, cache=False, shared_prefix=False)
                .score_many(prompts, examples),
                "shared_prefix": lambda prompts=prompts: Evaluator(lm, data.task, cache=False)
                .score_many(prompts, examples),
                "floor": floor,
            }
            if not args.no_bf16:
                runs["shared_prefix_bf16"] = lambda prompts=prompts: bf16_scores(lm, data.task, prompts, examples)
            best = {name: float("inf") for name in runs}
            for repeat in range(args.repeats + 1):  # interleaved, best of n after a warm-up
                for name, run in runs.items():
                    ready = floor.prepare() if name == "floor" else ()
                    start = time.perf_counter()
                    run(*ready)
                    if repeat:
                        best[name] = min(best[name], time.perf_counter() - start)
            rows = len(prompts) * len(examples)
            figures: dict = {name: {"seconds": round(s, 3), "prompt_examples_per_s": round(rows / s, 1)}
                             for name, s in best.items()}
            figures["speedup_vs_autoprompt_way"] = round(best["autoprompt_way"] / best["shared_prefix"], 2)
            figures["shared_prefix_over_floor"] = round(best["shared_prefix"] / best["floor"], 2)
            if "shared_prefix_bf16" in best:  # ranking precision only: reported scores stay fp32
                figures["speedup_bf16_vs_autoprompt_way"] = round(best["autoprompt_way"]
                                                                  / best["shared_prefix_bf16"], 2)
            figures["suffix_tokens_per_row"] = floor.ids.shape[1]
            figures["template"] = template
            report["templates"][f"{label}, positions={positions}"] = figures
            print(label, positions, json.dumps(figures), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
