"""Choose ``ptuning``'s per-mode defaults without looking at the reported seeds or the test set.

Each candidate (a set of ``--param`` values) trains on the LM-BFF 16-shot splits of the seeds
``benchmarks/ptuning.py`` does *not* report (87 and 100), selects on their 32-example dev as a
search does, and is then scored on a held-out set: labelled sentences from SST-2's sentence-level
*train* file (``sst2/sentence_level/stsa.binary.train``), disjoint from the test set (GLUE dev)
and from every 16-shot split. The 32-example dev is too small to rank candidates (accuracy moves
in steps of 1/32 and a seed's dev and test can disagree by 10 points); the held-out set is not.
Prints and writes ``benchmarks/results/ptuning_defaults_<mode>.json``; finished runs under
``--out`` are reused, so it resumes.

    python benchmarks/ptuning_defaults.py --mode ptuning --candidates after-input-lstm,around-lstm,front-mlp
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch
from ptuning import read_rows  # the sibling benchmark's results-file reader

from autoprompt import Evaluator, load_model
from autoprompt.io import atomic_write_json
from autoprompt.prompts import load_prompt
from autoprompt.search import SearchSpec, finished_result, run_search
from autoprompt.tasks import LMBFF_SEEDS, Example, load_task
from autoprompt.tasks.base import resolve_data_dir
from autoprompt.tasks.readers import read_label_first

MANUAL = "Review: {sentence}\nSentiment (positive or negative): [P]"  # sst2's manual template
CANDIDATES: dict[str, dict[str, object]] = {
    # the first default: P-tuning v1's pseudo tokens between the input and the template's words
    "after-input-lstm": {"encoder": "lstm", "num_tokens": 4,
                         "template": MANUAL.replace("{sentence}", "{sentence} [S][S][S][S]")},
    # the P-tuning paper's placement for single sentences: pseudo tokens on both sides of the input
    "around-lstm": {"encoder": "lstm", "template": "[S][S]" + MANUAL.replace("{sentence}", "{sentence} [S][S]")},
    # PEFT's placement: 10 pseudo tokens in front of everything, MLP encoder (the default since)
    "front-mlp": {"encoder": "mlp", "num_tokens": 10, "template": "[S]" * 10 + MANUAL},
}


def held_out(n: int, seed: int = 0) -> list[Example]:
    """``n`` labelled SST-2 train sentences in no 16-shot split (the test set is GLUE dev: disjoint)."""
    root = resolve_data_dir(None)
    seen = {ex.fields["sentence"].strip().lower() for s in LMBFF_SEEDS
            for split in ("train", "dev") for ex in getattr(load_task("sst2", None, 16, s), split)}
    rows = [(label, text) for label, text in read_label_first(root / "sst2/sentence_level/stsa.binary.train")
            if text.strip().lower() not in seen]
    return [Example({"sentence": text}, int(label)) for label, text in random.Random(seed).sample(rows, n)]


def run(name: str, params: dict, mode: str, data_seed: int, out: str, held: Evaluator, examples: list[Example]) -> dict:
    spec = SearchSpec(task="sst2", strategy="ptuning", params={"mode": mode, **params}, shots=16,
                      data_seed=data_seed, seed=0, out=out)
    r = finished_result(spec) or run_search(spec, lm=held.lm).to_json()
    score = held.score(load_prompt(Path(r["run_dir"]) / "prompt.json"), examples).score
    return {"candidate": name, "params": params, "data_seed": data_seed, "dev": round(r["scores"]["dev"], 4),
            "held_out": round(score, 4), "start_dev": r["details"]["start_dev"],
            "optimizer_steps": r["details"]["optimizer_steps"],
            "trainable_parameters": r["details"]["trainable_parameters"], "torch_threads": torch.get_num_threads(),
            "run_dir": r["run_dir"]}


def summarize(rows: list[dict]) -> dict:
    """Per candidate: the held-out and dev means over its seeds."""
    summary = {}
    for name in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == name]
        summary[name] = {"held_out_mean": round(statistics.mean(r["held_out"] for r in mine), 4),
                         "dev_mean": round(statistics.mean(r["dev"] for r in mine), 4),
                         "seeds": [r["data_seed"] for r in mine]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="ptuning")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="87,100")
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--out", default="runs-benchmark/defaults")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    examples = held_out(args.held_out)
    held = Evaluator(lm, load_task("sst2", None, 16, LMBFF_SEEDS[0]).task)
    path = Path(__file__).parent / "results" / f"ptuning_defaults_{args.mode}.json"
    for name in args.candidates.split(","):
        for data_seed in map(int, args.seeds.split(",")):
            if any((r["candidate"], r["data_seed"]) == (name, data_seed) for r in read_rows(path)):
                continue
            row = run(name, CANDIDATES[name], args.mode, data_seed, args.out, held, examples)
            print(json.dumps(row), flush=True)
            rows = [r for r in read_rows(path) if (r["candidate"], r["data_seed"]) != (name, data_seed)] + [row]
            atomic_write_json(path, {"task": "sst2 16-shot", "model": "smollm2-135m", "mode": args.mode,
                                     "held_out": f"{args.held_out} stsa.binary.train sentences (seed 0)",
                                     "summary": summarize(rows), "runs": rows})
    if rows := read_rows(path):
        print(json.dumps(summarize(rows), indent=2))


if __name__ == "__main__":
    main()
