"""The evaluator's half for generation tasks: decode, score against every reference, and measure the
references' likelihood.

A prompt on a generation task is scored by

* **decoding** each input through the frozen model with the prompt's triggers, soft tokens or
  prefix (`backends.decoding.generate_ids`: greedy or beam search, stopping at a newline or EOS),
  then corpus **BLEU** (the headline score) and **ROUGE-L** against all of the input's references
  (`text_metrics`, i.e. ``sacrebleu`` and ``rouge-score``);
* the teacher-forced **log-likelihood** of the references, per token (what training minimises,
  and a selection objective).

Inputs are length-sorted into the same buckets as classification (`batching.buckets`), and an
input's references all continue from one run of its prompt (its key/value cache).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from autoprompt import events
from autoprompt.backends import CausalLM, Encoded, LanguageModel
from autoprompt.backends.decoding import Decoding, generate_ids, target_ids, target_logprobs
from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring import text_metrics
from autoprompt.scoring.batching import Job, buckets
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.scores import EvalResult
from autoprompt.tasks.base import Example, Task, examples_fingerprint


def target_context(prompt: Prompt) -> tuple[str, str]:
    """The template text right before ``[P]`` and the space ``[P]`` takes: what a reference is
    tokenized after (as label words are, `PromptEncoder.word_table`)."""
    segments = prompt.template.segments
    at = next(i for i, s in enumerate(segments) if s.kind == "predict")
    before = segments[at - 1].value if at and segments[at - 1].kind == "text" else ""
    return before, segments[at].space


def scoring_forwards(examples: Sequence[Example]) -> int:
    """Example-forwards one scoring of ``examples`` is charged: one per input, plus one per reference
    on a generation task (classification examples have none)."""
    return len(examples) + sum(len(ex.targets) for ex in examples)


class GenerationScorer:
    """Scores prompts of one generation task (see the module docstring); `Evaluator` delegates here.

    Args:
        lm: the frozen causal LM.
        task: a generation task.
        batch_size, max_tokens: the evaluator's bucket limits.
        budget: charged one example-forward per decoded input and one per scored reference.
        decoding: how outputs are generated.
        soft_of: the prompt's checked soft tensors (`Evaluator._soft`).
        stats: the evaluator's token counters.
        paid: the evaluator's (prompt, examples) keys already charged; shared, so a resumed search
            that restores it recomputes what the cache lost for free, as classification does.
        cache: reuse results of prompts already scored on the same examples (the evaluator's ``cache``).
    """

    def __init__(self, lm: LanguageModel, task: Task, batch_size: int, max_tokens: int, budget: Budget | None,
                 decoding: Decoding, soft_of: Callable[[Prompt], SoftPrompt | None], stats: Counter[str],
                 paid: set[tuple[str, str]], cache: bool = True) -> None:
        if not isinstance(lm, CausalLM):
            raise AutopromptError(f"task {task.name} generates text, which needs a causal LM; {lm.name} is a "
                                  f"{lm.kind} LM")
        self.lm, self.task, self.budget, self.decoding = lm, task, budget, decoding
        self.batch_size, self.max_tokens, self.soft_of, self.stats = batch_size, max_tokens, soft_of, stats
        self.paid = paid
        self._cache: dict[tuple[str, str], EvalResult] | None = {} if cache else None

    def score_many(self, prompts: Sequence[AnyPrompt], examples: Sequence[Example],
                   progress: bool = False) -> list[EvalResult]:
        """Decode and score each prompt on ``examples`` (cached by prompt and examples)."""
        if not examples:
            raise AutopromptError("nothing to score: the example list is empty (check `limit` and the split)")
        missing = next((i for i, ex in enumerate(examples) if not ex.targets), None)
        if missing is not None:
            raise AutopromptError(f"example {missing} of task {self.task.name} has no reference text to score against")
        key = examples_fingerprint(examples)
        out = []
        for prompt in prompts:
            if isinstance(prompt, Ensemble):
                raise AutopromptError("ensembles average class probabilities; a generation task has no classes — "
                                      "score its prompts one by one")
            hit = self._cache.get((prompt.fingerprint, key)) if self._cache is not None else None
            if hit is None:
                hit = self._score(prompt, examples, key, progress)
                if self._cache is not None:
                    self._cache[(prompt.fingerprint, key)] = hit
            out.append(hit)
        return out

    def _score(self, prompt: Prompt, examples: Sequence[Example], key: str, progress: bool) -> EvalResult:
        refs = [list(ex.targets) for ex in examples]
        budget = self.budget if (prompt.fingerprint, key) not in self.paid else None
        if budget is not None:
            budget.require(forwards=scoring_forwards(examples))
        batches = self._jobs(prompt, examples)  # encoded once: decoding, likelihood and the token count share them
        outputs = self.generate(prompt, examples, progress, batches)
        loglik = self.likelihood(prompt, examples, batches)
        if budget is not None:
            budget.charge(forwards=scoring_forwards(examples),
                          tokens=sum(len(job.encoded) for batch in batches for job in batch))
        self.paid.add((prompt.fingerprint, key))
        stats = text_metrics.bleu_stats(outputs, refs)
        rouge = text_metrics.rouge_l(outputs, refs)
        return EvalResult("bleu", text_metrics.bleu_from_stats(stats), loglik[:, None], torch.zeros(len(examples),
                          dtype=torch.long), extra={"rougeL": float(rouge.mean()),
                                                    "loglik_per_token": float(loglik.mean())},
                          outputs=outputs, bleu_stats=stats, sentence_scores=text_metrics.sentence_bleu(outputs, refs))

    def _jobs(self, prompt: Prompt, examples: Sequence[Example]) -> list[list[Job]]:
        prompt.template.check_fields(self.task.fields)
        self.lm.check_triggers(prompt)
        return buckets([Job(0, e, self.lm.encode(prompt, ex)) for e, ex in enumerate(examples)], self.batch_size,
                       self.max_tokens, self.stats)

    def generate(self, prompt: Prompt, examples: Sequence[Example], progress: bool = False,
                 batches: list[list[Job]] | None = None) -> list[str]:
        """The decoded text for each example (up to its first newline, stripped). Not charged: the
        caller pays (`score_many` does). ``batches``: the examples' jobs when already built (`_jobs`)."""
        soft = self.soft_of(prompt)
        texts = [""] * len(examples)
        batches = batches if batches is not None else self._jobs(prompt, examples)
        with events.Progress("generating", len(examples), "ex", enabled=progress) as bar:
            for batch in batches:
                for job, ids in zip(batch, generate_ids(self.lm, [j.encoded for j in batch], self.decoding, soft),
                                    strict=True):
                    texts[job.example] = self.lm.decode(ids).split("\n", 1)[0].strip()
                bar.advance(len(batch))
        return texts

    def references(self, prompt: Prompt, example: Example) -> list[tuple[int, ...]]:
        """The token ids of each of ``example``'s references as scored after ``prompt`` (EOS last)."""
        before, space = target_context(prompt)
        return [target_ids(self.lm, before, space, ref) for ref in example.targets]

    @torch.inference_mode()
    def likelihood(self, prompt: Prompt, examples: Sequence[Example],
                   batches: list[list[Job]] | None = None) -> Tensor:
        """``[N]`` each example's mean over its references of their per-token log-likelihood."""
        soft = self.soft_of(prompt)
        out = torch.empty(len(examples))
        for batch in batches if batches is not None else self._jobs(prompt, examples):
            targets = [self.references(prompt, examples[j.example]) for j in batch]
            sums = target_logprobs(self.lm, [j.encoded for j in batch], targets, soft)
            for job, total, refs in zip(batch, sums, targets, strict=True):
                out[job.example] = (total / torch.tensor([len(r) for r in refs])).mean()
        return out

    def training_logprobs(self, encoded: Sequence[Encoded], targets: Sequence[Sequence[Sequence[int]]],
                          soft: SoftPrompt) -> list[Tensor]:
        """Summed reference log-probs per row that keep the graph to ``soft`` (one training step)."""
        with torch.enable_grad():
            return target_logprobs(self.lm, encoded, targets, soft)
