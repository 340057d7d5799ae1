"""Would another calibration estimator do better than ``prior``? Checked on held-out SST-2 splits only.

Candidates, each a class log-prior subtracted from the prompt's normalised class log-probs:

* ``prior`` (the default): log of the mean class distribution over the split's 32 train inputs;
* ``prior_log``: the mean class *log*-prob over the same inputs (centres the log-odds; what
  "removing the mean class log-prob" means);
* ``contextual``: Zhao et al. (2021), the content-free inputs;
* ``domain`` / ``domain_log``: Fei et al. (2023), "Mitigating label biases for in-context learning":
  20 strings of random words drawn from the train inputs, each as long as the mean train input,
  averaged in probability (or log) space.

Held-out splits are `selection_defaults.held_out_splits` (16-shot train/dev drawn from SST-2's GLUE
train, scored on 600 other train rows): never an LM-BFF seed, never test. Prompts: the model's manual
prompt and LM-BFF's cloze prompt ``{sentence} It was [P]`` (great / terrible).

    python benchmarks/calibration_variants.py --splits 1,2,3,4,5,6,7,8,9

Prints and writes ``benchmarks/results/calibration_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch
from selection_defaults import CLOZE, held_out_splits

from autoprompt import Evaluator, Prompt, TaskData, load_model
from autoprompt.io import atomic_write_json
from autoprompt.scoring.scores import log_mean_prob
from autoprompt.tasks import Example

RESULTS = Path(__file__).parent / "results"
DOMAIN_STRINGS = 20


def domain_inputs(data: TaskData, k: int = DOMAIN_STRINGS) -> list[Example]:
    """Fei et al.'s domain-context inputs: random words of the train inputs, mean train length."""
    words = [w for ex in data.train for w in ex.fields["sentence"].split()]
    length = round(statistics.mean(len(ex.fields["sentence"].split()) for ex in data.train))
    rng = random.Random(0)
    return [Example({"sentence": " ".join(rng.choice(words) for _ in range(length))}, 0) for _ in range(k)]


def variants(ev: Evaluator, prompt: Prompt, data: TaskData) -> dict[str, float]:
    """Held-out accuracy of the prompt under each estimator of the class log-prior."""
    def logprobs(examples: list[Example]) -> torch.Tensor:
        return ev.score(prompt, examples).logprobs.log_softmax(-1)                # [N, C]

    held_out = logprobs(data.test)
    gold = torch.tensor([ex.label for ex in data.test])
    train, free, domain = logprobs(data.train), logprobs(ev.content_free()), logprobs(domain_inputs(data))
    priors = {"none": torch.zeros(held_out.shape[1]), "prior": log_mean_prob(train), "prior_log": train.mean(0),
              "contextual": log_mean_prob(free), "domain": log_mean_prob(domain), "domain_log": domain.mean(0)}
    return {name: round(((held_out - p).argmax(-1) == gold).float().mean().item(), 4) for name, p in priors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="1,2,3,4,5,6,7,8,9")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    splits = held_out_splits([int(s) for s in args.splits.split(",")])
    rows = []
    for seed, data in splits.items():
        ev = Evaluator(lm, data.task)
        for name, prompt in (("manual", data.task.default_prompt), ("cloze", CLOZE)):
            rows.append({"split": seed, "prompt": name, "held_out": variants(ev, prompt, data)})
            print(json.dumps(rows[-1]), flush=True)
    methods = list(rows[0]["held_out"])
    mean = {p: {m: {"mean": round(statistics.mean(r["held_out"][m] for r in rows if r["prompt"] == p), 4),
                    "std": round(statistics.stdev(r["held_out"][m] for r in rows if r["prompt"] == p), 4)}
                for m in methods} for p in ("manual", "cloze")}
    report = {"model": lm.name, "splits": list(splits), "held_out_n": len(next(iter(splits.values())).test),
              "rows": rows, "mean": mean, "torch_threads": torch.get_num_threads()}
    print(json.dumps(mean, indent=1))
    atomic_write_json(RESULTS / "calibration_variants.json", report)


if __name__ == "__main__":
    main()
