"""Throughput on one GPU: SmolLM2-135M's architecture with random weights (no download).

Speed does not depend on the weights' values, so the model is built from SmolLM2-135M's config
(30 layers, hidden 576, 9 heads / 3 key-value heads, vocabulary 49152, tied embeddings); inputs
are generated sentences of SST-2's length (about 25 tokens with the template). Per batch size:

* evaluator tokens/s vs a bare ``model(**batch)`` over the same padded batches (bf16 autocast);
* trigger re-scoring: (example, candidate) rows/s for the current prompt and 10 swaps;
* soft-prompt training steps/s (10 ``[S]`` vectors, forward + backward + Adam);
* peak GPU memory, and the fraction of the card's bf16 dense matmul rate reached by the bare
  forward (2 · parameters · tokens FLOPs, against ``--peak-tflops``, default the H100/H200 SXM's 989).

Runs in a few minutes on an H100/H200. ``--device cpu --quick`` checks the script itself on a CPU.

    python benchmarks/gpu.py [--batch-sizes 32,128,512] [--device cuda]

Writes ``benchmarks/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from autoprompt import Evaluator, Example, Prompt, Task
from autoprompt.backends import CausalLM
from autoprompt.io import atomic_write_json
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.results.versions import versions
from autoprompt.testing.tiny import NEGATIVE, NOUNS, POSITIVE, _bpe_tokenizer

SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
                "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def sentences(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    words = NOUNS + POSITIVE + NEGATIVE + ["the", "was", "a", "and", "but", "not", "very"]
    return [Example({"sentence": " ".join(rng.choice(words) for _ in range(rng.randint(12, 28)))}, i % 2)
            for i in range(n)]


def timed(fn, sync) -> float:
    fn()  # warm-up (kernels, allocator)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the script (CPU)")
    args = parser.parse_args()
    config = dict(SMOLLM2_135M, **({"num_hidden_layers": 2} if args.quick else {}))
    tokenizer = _bpe_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, pad_token_id=tokenizer.pad_token_id))
    lm = CausalLM(model, tokenizer, name="smollm2-135m-architecture", device=args.device)
    cuda = lm.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    params = lm.num_parameters()
    task = Task("synthetic", ("sentence",), ("negative", "positive"), "Review: {sentence}\nSentiment: [P]",
                {"negative": ["bad"], "positive": ["good"]}, "accuracy", "generated sentences")
    prompt = task.default_prompt
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "config": config, "parameters": params,
              "peak_tflops_assumed": args.peak_tflops, "versions": versions(), "batch_sizes": {}}
    for bs in map(int, args.batch_sizes.split(",")):
        n = 2 * bs if not args.quick else bs
        examples = sentences(n)
        encoded = [lm.encode(prompt, ex).ids for ex in examples]
        tokens = sum(map(len, encoded))
        batches = [lm.pad(encoded[i : i + bs], left=True) for i in range(0, n, bs)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        @torch.inference_mode()
        def bare(batches=batches) -> None:
            with lm._autocast():
                for ids, mask in batches:
                    model(input_ids=ids, attention_mask=mask, logits_to_keep=1)

        evaluator = Evaluator(lm, task, batch_size=bs, max_tokens=bs * 64, cache=False)
        bare_s = timed(bare, sync)
        eval_s = timed(lambda examples=examples, evaluator=evaluator: evaluator.score(prompt, examples), sync)

        # re-scoring: the current triggers and 10 swaps at one position, on bs // 11 examples (>= 1)
        the = lm.tokenize(" the")[0]
        current = Prompt("Review: {sentence} [T] [T] [T] [T] [T]\nSentiment: [P]", prompt.verbalizer, (the,) * 5)
        rng = random.Random(0)
        cands = [current] + [current.with_triggers([*current.trigger_ids[:2], rng.randrange(400), the, the])
                             for _ in range(10)]
        few = examples[: max(1, bs // len(cands))]
        rescore_s = timed(lambda cands=cands, few=few, evaluator=evaluator: evaluator.score_many(cands, few), sync)

        # soft-prompt training steps: 10 [S] vectors before the input
        soft_prompt = Prompt("[S] " * 10 + "Review: {sentence}\nSentiment: [P]", prompt.verbalizer)
        vectors = torch.nn.Parameter(lm.embedding_matrix()[:10].detach().clone().float())
        optim = torch.optim.Adam([vectors], lr=1e-3)
        batch = [lm.encode(soft_prompt, ex) for ex in examples[:bs]]
        words = lm.word_table(soft_prompt, task.labels)
        gold = torch.tensor([ex.label for ex in examples[:bs]], device=lm.device)

        def train_steps(steps: int = 3, batch=batch, words=words, gold=gold, vectors=vectors, optim=optim) -> None:
            for _ in range(steps):
                logprobs = lm.soft_logprobs(batch, words, SoftPrompt(slots=vectors))
                loss = torch.nn.functional.cross_entropy(logprobs, gold)
                optim.zero_grad()
                loss.backward()
                optim.step()

        train_s = timed(train_steps, sync) / 3
        figures = {
            "examples": n, "tokens": tokens,
            "bare_tokens_per_s": round(tokens / bare_s), "evaluator_tokens_per_s": round(tokens / eval_s),
            "evaluator_over_bare": round(bare_s / eval_s, 3),
            "rescore_rows_per_s": round(len(cands) * len(few) / rescore_s, 1),
            "soft_train_steps_per_s": round(1 / train_s, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "bf16_matmul_fraction": round(2 * params * tokens / bare_s / (args.peak_tflops * 1e12), 4),
        }
        report["batch_sizes"][str(bs)] = figures
        print(bs, figures, flush=True)
    out = Path(__file__).parent / "results" / ("gpu.json" if not args.quick else "gpu_quick_check.json")
    atomic_write_json(out, report)


if __name__ == "__main__":
    main()
