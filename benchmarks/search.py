"""Candidate re-scoring throughput of the gradient search on smollm2-135m, SST-2.

One re-scoring step scores the current triggers and 10 candidates (5 triggers, single-token
swaps) on a batch of train examples. Measured side by side in one run:

* ``autoprompt_way``: one full forward per candidate per batch, the LM head over every position,
  as AutoPrompt's code does;
* ``batched``: all candidates as one evaluator job, without prefix sharing;
* ``shared_prefix``: the evaluator's default on causal LMs: the input's key/value cache computed
  once per example, only the trigger-and-template suffix run per candidate.

Two templates: AutoPrompt's (``{sentence} [T]x5 [P]``) and the task's manual one with the
triggers after the sentence. Writes ``benchmarks/results/search.json``.

    python benchmarks/search.py [--batch 32] [--repeats 3]
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
from autoprompt.search import with_triggers
from autoprompt.versions import versions


@torch.inference_mode()
def autoprompt_way(lm, prompts, examples, labels) -> None:
    """AutoPrompt's loop: per candidate, a full forward of the batch and the label log-probs."""
    for prompt in prompts:
        table = lm.word_table(prompt, labels)
        ids, mask = lm.pad([lm.encode(prompt, ex).ids for ex in examples], left=False)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits                 # [B, L, V]
        last = logits[torch.arange(len(examples)), mask.sum(-1) - 1].log_softmax(-1)
        _ = last[:, [ws[0][0] for ws in table]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--triggers", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "search.json"))
    args = parser.parse_args()

    lm = load_model(args.model)
    data = load_task("sst2", shots=16, data_seed=13)
    examples = data.train[: args.batch]
    vocab = lm.word_start_tokens().nonzero()[:, 0].tolist()
    rng = random.Random(0)
    the = lm.tokenize(" the")[0]
    report = {"model": args.model, "task": "sst2 (16-shot train, seed 13)", "batch": len(examples),
              "candidates": args.candidates, "triggers": args.triggers,
              "device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                         else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"),
              "versions": versions(), "templates": {}}
    manual = data.task.default_prompt
    templates = {"autoprompt": "{sentence}" + " [T]" * args.triggers + " [P]",
                 "manual+triggers": with_triggers(manual.template, args.triggers).source}
    for label, template in templates.items():
        current = Prompt(template, manual.verbalizer, (the,) * args.triggers)
        prompts = [current]
        for _ in range(args.candidates):
            cand = list(current.trigger_ids)
            cand[rng.randrange(args.triggers)] = rng.choice(vocab)
            prompts.append(current.with_triggers(cand))
        runs = {
            "autoprompt_way": lambda prompts=prompts: autoprompt_way(lm, prompts, examples, data.task.labels),
            "batched": lambda prompts=prompts: Evaluator(lm, data.task, cache=False, shared_prefix=False)
            .score_many(prompts, examples),
            "shared_prefix": lambda prompts=prompts: Evaluator(lm, data.task, cache=False)
            .score_many(prompts, examples),
        }
        for run in runs.values():
            run()  # warm-up
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):  # interleaved, best of n
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        rows = len(prompts) * len(examples)
        figures: dict = {name: {"seconds": round(s, 3), "prompt_examples_per_s": round(rows / s, 1)}
                         for name, s in best.items()}
        figures["speedup_vs_autoprompt_way"] = round(best["autoprompt_way"] / best["shared_prefix"], 2)
        figures["template"] = template
        report["templates"][label] = figures
        print(label, json.dumps(figures), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
