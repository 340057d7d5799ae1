"""``ptuning`` modes vs the manual prompt vs PEFT's prompt tuning and P-tuning, on smollm2-135m.

Each of our runs is a normal search (``autoprompt search --strategy ptuning --param mode=M``);
finished runs under ``--out`` are reused. PEFT runs train the same model on the same 16-shot
split with the same input text (the task's manual template), 150 steps at batch 8, a text
initialisation for prompt tuning, and are scored on the same test split by the label words'
log-probs after the prompt — the only difference is the library. Prints and writes
``benchmarks/results/ptuning_<task>.json``.

    python benchmarks/ptuning.py --task sst2 --seeds 13,21,42 --modes prompt,ptuning,prefix --peft prompt,ptuning

Times: ``train_s`` is the training loop (ours: with its ``dev`` evaluations and early stopping;
PEFT: 150 steps, no evaluations); ``wall_s`` the whole run (ours also scores the manual baseline
on dev and test, the soft prompt on test and the nearest-token readout on dev; PEFT only test).
Use ``OMP_NUM_THREADS`` to fix the thread count; the results file records it per row, and the
summary's times average only the rows at the most common thread count. Two processes may share
one results file (rows are merged on write), e.g. ours and PEFT's side by side, one thread each:

    OMP_NUM_THREADS=1 python benchmarks/ptuning.py --task rte --modes prompt,ptuning,prefix &
    OMP_NUM_THREADS=1 python benchmarks/ptuning.py --task rte --modes '' --peft prompt,ptuning

Needs ``pip install peft`` for ``--peft`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from figures import sample_std

from autoprompt import load_model
from autoprompt.backends.provision import model_dir
from autoprompt.io import atomic_write_json, read_json
from autoprompt.search import SearchSpec, finished_result, run_search
from autoprompt.tasks import load_task


def ours(task: str, mode: str, data_seed: int, out: str, lm, dtype: str = "fp32") -> dict:
    spec = SearchSpec(task=task, strategy="ptuning", params={"mode": mode}, shots=16, data_seed=data_seed, seed=0,
                      out=out, dtype=dtype)
    r = finished_result(spec) or run_search(spec, lm=lm).to_json()
    trace = (Path(r["run_dir"]) / "trace.jsonl").read_text().splitlines()
    return {"method": f"autoprompt {mode}" + (f" ({dtype})" if dtype != "fp32" else ""), "data_seed": data_seed,
            "dtype": r.get("search_dtype", dtype), "test": round(r["scores"]["test"], 4),
            "manual_test": round(r["baseline"]["test"], 4), "dev": round(r["scores"]["dev"], 4),
            "trainable_parameters": r["details"]["trainable_parameters"], "wall_s": r["wall_s"],
            "train_s": json.loads(trace[-1])["time_s"],  # the training loop with its dev evaluations
            "torch_threads": torch.get_num_threads(),
            "optimizer_steps": r["details"]["optimizer_steps"],
            "readout": r["details"].get("readout", {}).get("discrete_prompt"), "run_dir": r["run_dir"]}


def peft_run(task: str, method: str, data_seed: int, lm, steps: int = 150, batch_size: int = 8) -> dict:
    """PEFT's own prompt tuning / P-tuning, trained and scored on our split with our input text."""
    from peft import (  # noqa: PLC0415
        PromptEncoderConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
    )
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    started = time.perf_counter()
    torch.manual_seed(0)
    data = load_task(task, None, 16, data_seed)
    manual = data.task.default_prompt
    base = AutoModelForCausalLM.from_pretrained(model_dir("smollm2-135m"), dtype=torch.float32)
    hidden = base.config.hidden_size
    if method == "prompt":
        words = " ".join(w for ws in manual.verbalizer.words.values() for w in ws)
        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=10,
                                    prompt_tuning_init=PromptTuningInit.TEXT,
                                    prompt_tuning_init_text=f"Classify as {words}:",
                                    tokenizer_name_or_path=str(model_dir("smollm2-135m")))
        lr = 3e-2
    else:  # PEFT's default encoder_hidden_size is None and fails; set it
        config = PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=10, encoder_hidden_size=hidden)
        lr = 1e-3
    model = get_peft_model(base, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table = lm.word_table(manual, data.task.labels)
    first = [ws[0][0] for ws in table]  # first token of each class's first word

    def prefix_ids(ex) -> list[int]:
        return list(lm.encode(manual, ex).ids)

    def class_logprobs(batch) -> torch.Tensor:                                   # [B, C]
        rows = [prefix_ids(ex) for ex in batch]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), lm.pad_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        logits = model(input_ids=ids, attention_mask=mask).logits                # [B, V + L, V]
        last = logits.shape[1] - width + mask.sum(-1) - 1                        # virtual tokens come first
        return logits[torch.arange(len(rows)), last][:, first].float().log_softmax(-1)

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    train = list(data.train)
    order: list = []
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(train, len(train))
        batch, order = order[:batch_size], order[batch_size:]
        gold = torch.tensor([ex.label for ex in batch])
        loss = torch.nn.functional.nll_loss(class_logprobs(batch), gold)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    train_s = round(time.perf_counter() - started, 1)
    correct = 0
    with torch.inference_mode():
        test = sorted(data.test, key=lambda ex: len(prefix_ids(ex)))
        for i in range(0, len(test), 32):
            batch = test[i : i + 32]
            preds = class_logprobs(batch).argmax(-1)
            correct += sum(int(p) == ex.label for p, ex in zip(preds, batch, strict=True))
    return {"method": f"peft {method}", "data_seed": data_seed, "test": round(correct / len(test), 4),
            "trainable_parameters": trainable, "wall_s": round(time.perf_counter() - started, 1), "train_s": train_s,
            "torch_threads": torch.get_num_threads(),
            "optimizer_steps": steps, "lr": lr}


def read_rows(path: Path) -> list[dict]:
    """The rows in the results file as it is now (another process may have added some)."""
    return read_json(path)["runs"] if path.is_file() else []


def summarize(rows: list[dict]) -> dict:
    """Per method: test mean/std over seeds; times averaged over the rows at the usual thread count."""
    threads = statistics.mode(r.get("torch_threads", 1) for r in rows)  # rows without it: the 1-thread era
    summary = {}
    for name in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == name]
        timed = [r for r in mine if r.get("torch_threads", 1) == threads and "train_s" in r]
        summary[name] = {"seeds": [r["data_seed"] for r in mine],
                         "test_mean": round(statistics.mean(r["test"] for r in mine), 4),
                         "test_std": round(sample_std(r["test"] for r in mine), 4),
                         "timed_seeds": [r["data_seed"] for r in timed], "timed_threads": threads,
                         "wall_s_mean": round(statistics.mean(r["wall_s"] for r in timed), 1) if timed else None,
                         "train_s_mean": round(statistics.mean(r["train_s"] for r in timed), 1) if timed else None,
                         "trainable_parameters": mine[0]["trainable_parameters"]}
    return summary


def write_report(path: Path, task: str, rows: list[dict]) -> None:
    """The results file, written atomically after every run so that a long benchmark resumes."""
    manual = [r["manual_test"] for r in rows if "manual_test" in r]
    report = {"task": f"{task} 16-shot", "model": "smollm2-135m",
              "device": "cpu (torch threads per run: torch_threads)",
              "manual_test_mean": round(statistics.mean(manual), 4) if manual else None,
              "summary": summarize(rows), "runs": rows}
    atomic_write_json(path, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--modes", default="prompt,ptuning,prefix")
    parser.add_argument("--peft", default="", help="PEFT methods to compare: prompt,ptuning")
    parser.add_argument("--out", default="runs-benchmark")
    parser.add_argument("--tag", default="", help="results file suffix: a fresh side-by-side run keeps its own rows")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                        help="what our runs train in (PEFT's stay fp32); scores are fp32 either way")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    path = Path(__file__).parent / "results" / f"ptuning_{args.task}{'_' + args.tag if args.tag else ''}.json"
    for data_seed in map(int, args.seeds.split(",")):
        tag = f" ({args.dtype})" if args.dtype != "fp32" else ""
        jobs = [(f"autoprompt {m}{tag}", lambda m=m, s=data_seed: ours(args.task, m, s, args.out, lm, args.dtype))
                for m in filter(None, args.modes.split(","))]
        jobs += [(f"peft {m}", lambda m=m, s=data_seed: peft_run(args.task, m, s, lm))
                 for m in filter(None, args.peft.split(","))]
        for method, job in jobs:
            if any((r["method"], r["data_seed"]) == (method, data_seed) for r in read_rows(path)):  # by another process
                continue
            row = job()
            print(json.dumps(row), flush=True)
            # re-read: a second process (say, PEFT's rows on the other core) may have added rows meanwhile
            rows = [r for r in read_rows(path) if (r["method"], r["data_seed"]) != (method, data_seed)] + [row]
            write_report(path, args.task, rows)
    if rows := read_rows(path):
        print(json.dumps(summarize(rows), indent=2))


if __name__ == "__main__":
    main()
