"""Evaluator throughput on smollm2-135m: SST-2 test (872) with the manual prompt.

Measures, side by side in one run on the same token batches:

* the evaluator (bucketed batches, last-position LM head, log-probs of the label words);
* a bare loop ``model(input_ids=..., attention_mask=...)`` over exactly the batches the
  evaluator formed (no scoring at all).

Prints examples/s for both, their ratio (target >= 0.9) and the padded-token fraction (target
<= 10%), and writes ``benchmarks/results/evaluator.json``.

    python benchmarks/evaluator.py [--repeats 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from autoprompt import Evaluator, load_model, load_task
from autoprompt.results.versions import versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluator.json"))
    args = parser.parse_args()

    lm = load_model(args.model)
    data = load_task("sst2")
    examples = data.test[: args.limit]
    prompt = data.task.default_prompt

    # the batches the evaluator forms, as padded id tensors for the bare loop
    plan = Evaluator(lm, data.task, batch_size=args.batch_size, cache=False).plan(prompt, examples)
    batches = [lm.pad([e.ids for e in batch], left=lm.left) for batch in plan]

    def run_evaluator() -> tuple[float, float, float]:
        ev = Evaluator(lm, data.task, batch_size=args.batch_size, cache=False)
        start = time.perf_counter()
        result = ev.score(prompt, examples)
        seconds = time.perf_counter() - start
        padding = ev.stats["padded_tokens"] / (ev.stats["padded_tokens"] + ev.stats["real_tokens"])
        return seconds, padding, result.score

    @torch.inference_mode()
    def run_bare() -> float:
        start = time.perf_counter()
        for ids, mask in batches:
            lm.model(input_ids=ids, attention_mask=mask)
        return time.perf_counter() - start

    run_bare()  # warm-up
    ours, bare = [], []
    for _ in range(args.repeats):  # interleaved, best of n: the same machine state for both
        seconds, padding, score = run_evaluator()
        ours.append(seconds)
        bare.append(run_bare())
    n = len(examples)
    figures = {
        "model": args.model, "task": "sst2", "split": "test", "n": n, "batch_size": args.batch_size,
        "device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                   else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "evaluator_examples_per_s": round(n / min(ours), 2), "bare_loop_examples_per_s": round(n / min(bare), 2),
        "ratio_vs_bare": round(min(bare) / min(ours), 3), "padded_fraction": round(padding, 4),
        "accuracy": round(score, 4), "repeats": args.repeats, "versions": versions(),
    }
    print(json.dumps(figures, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
