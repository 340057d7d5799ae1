"""Class scores under the decision rules other than ``direct`` (`autoprompt.prompts.Rule`).

* ``channel`` — every (example, class, label word) is the label's prefix followed by the input
  (`PromptEncoder.encode_channel`); rows that share a prefix (all of them, unless demonstrations are
  chosen per query) run it once, and the inputs continue from its key/value cache
  (`CausalLM.continuation_logliks`). A class with several words scores the log of their mean
  likelihood; the class distribution is the softmax of the class scores over a temperature fitted on
  train (`fit_temperature`; 1 until fitted), a uniform label prior.
* ``centroid`` — the last hidden state at ``[P]`` (`FrozenLM.head_features`, the input of the LM
  head, with the prompt's soft part and demonstrations in place), batched by length; class scores are
  ``−distance / scale`` to the stored centroids (``scale``: a temperature fitted on the train examples'
  leave-one-out distances), plus ``1e-6`` times the direct first-token class log-probs read from the
  same forward, which only breaks exact ties.

The evaluator owns caching and the budget; this module only computes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from autoprompt.backends import CausalLM, LanguageModel, WordTable
from autoprompt.backends.weights import logsumexp_classes, upcast
from autoprompt.errors import AutopromptError
from autoprompt.events import Progress
from autoprompt.prompts import Demonstration, Prompt, Rule
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.batching import Job, buckets
from autoprompt.tasks.base import Example, Task

TIE_BREAK = 1e-6  # weight of the direct scores under `centroid`: below any distance gap that is not a tie


class RuleScorer:
    """Scores prompts whose rule is ``channel`` or ``centroid`` (see the module docstring).

    Args:
        lm: the frozen backend.
        task: the task (its labels, in order).
        batch_size: most examples per forward.
        max_tokens: most padded tokens per forward.
        stats: the evaluator's token counters.
    """

    def __init__(self, lm: LanguageModel, task: Task, batch_size: int, max_tokens: int, stats: Counter[str]) -> None:
        self.lm, self.task = lm, task
        self.batch_size, self.max_tokens, self.stats = batch_size, max_tokens, stats

    def check(self, prompt: Prompt, soft: SoftPrompt | None, calibratable: bool) -> None:
        """Raise where ``prompt``'s rule cannot score on this model and task (one line, with the rules that work)."""
        rule = prompt.rule
        if not calibratable:
            raise AutopromptError(f"rule {rule.name!r} is for classification tasks; {self.task.name} is scored with "
                                  "rule direct")
        if rule.name == "channel":
            if not isinstance(self.lm, CausalLM):
                raise AutopromptError(f"rule 'channel' scores the input after the label, which needs a causal LM; "
                                      f"{self.lm.name} is a {self.lm.kind} LM: use rule direct or centroid")
            if soft is not None:
                raise AutopromptError("rule 'channel' scores discrete prompts; a prompt with a soft part works with "
                                      "rule direct or centroid")
        if rule.name == "centroid":
            if rule.centroids is None:
                raise AutopromptError("the prompt has rule 'centroid' but no centroids; fit them on labelled train "
                                      "examples first (Evaluator.fit_rule; evaluate with rule centroid fits them on "
                                      "the task's train)")
            missing = [lab for lab in self.task.labels if lab not in rule.centroids]
            if missing:
                raise AutopromptError(f"the prompt's centroids have no class {missing}; fit them again for this task")
            width = len(next(iter(rule.centroids.values())))
            hidden = self.lm.output_embedding_matrix().shape[1]
            if width != hidden:
                raise AutopromptError(f"the prompt's centroids have width {width} but {self.lm.name}'s hidden states "
                                      f"have {hidden}; fit them on this model")

    def forwards(self, prompt: Prompt) -> int:
        """Example-forwards one example costs (`forwards_per_example`)."""
        return forwards_per_example(prompt, self.task.labels)

    def score(self, prompt: Prompt, examples: Sequence[Example], demos: list[list[Demonstration]] | None,
              soft: SoftPrompt | None, bar: Progress) -> tuple[Tensor, int]:
        """``([N, C]`` class log-probs, tokens run) of ``prompt`` on ``examples``."""
        if prompt.rule.name == "channel":
            scores, tokens = self.channel_scores(prompt, examples, demos, bar)
            return (scores / (prompt.rule.scale or 1.0)).log_softmax(-1), tokens
        features, direct, tokens = self.features(prompt, examples, demos, soft, bar)
        return centroid_logprobs(prompt.rule, features, self.task.labels, direct), tokens

    # ---- channel ---------------------------------------------------------------------------------

    def channel_scores(self, prompt: Prompt, examples: Sequence[Example], demos: list[list[Demonstration]] | None,
                       bar: Progress | None = None, per_word: bool = False) -> tuple[Tensor, int]:
        """``([N, C]`` each class's log-likelihood of the input, tokens run), before the temperature;
        ``per_word``: ``[N, W]``, each label word's (the verbalizer's words in class order)."""
        labels = self.task.labels
        encoded = [self.lm.encode_channel(prompt, ex, labels, demos[e] if demos else None)
                   for e, ex in enumerate(examples)]
        if any(not enc.query for enc in encoded):
            raise AutopromptError("rule 'channel': an input renders to no tokens; check the template's fields")
        n_words = [len(per) for per in encoded[0].prefixes]
        width = sum(n_words)
        # every (example, word) row grouped by its prefix: without per-query demonstrations, one group per word
        groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for e, enc in enumerate(encoded):
            flat = [p for per in enc.prefixes for p in per]
            for w, prefix in enumerate(flat):
                groups.setdefault(prefix, []).append((e, w))
        word_scores = torch.empty(len(examples), width)                                    # [N, W]
        tokens = 0
        for prefix, rows in groups.items():
            assert isinstance(self.lm, CausalLM)  # `check` refuses channel elsewhere
            values = self.lm.continuation_logliks(prefix, [encoded[e].query for e, _ in rows])
            if prompt.rule.length_norm:
                values = values / torch.tensor([float(len(encoded[e].query)) for e, _ in rows])
            for (e, w), v in zip(rows, values.tolist(), strict=True):
                word_scores[e, w] = v
            tokens += len(prefix) + sum(len(encoded[e].query) for e, _ in rows)
        if bar is not None:
            bar.advance(len(examples))
        if per_word:
            return word_scores, tokens
        # a class's words are alternative renderings of it: the log of their mean likelihood
        table: WordTable = [[(0,)] * n for n in n_words]  # only the counts matter to logsumexp_classes
        return logsumexp_classes(word_scores, table) - torch.log(torch.tensor(n_words, dtype=torch.float)), tokens

    def fit_channel(self, prompt: Prompt, examples: Sequence[Example],
                    demos: list[list[Demonstration]] | None) -> Rule:
        """``prompt``'s channel rule with its temperature fitted on labelled ``examples`` (`fit_temperature`)."""
        scores, _ = self.channel_scores(prompt.with_rule(prompt.rule.unfitted()), examples, demos)
        rule = prompt.rule
        return Rule(rule.name, rule.length_norm, scale=fit_temperature(scores.double(), _labels(examples)))

    # ---- centroid --------------------------------------------------------------------------------

    @torch.inference_mode()
    def features(self, prompt: Prompt, examples: Sequence[Example], demos: list[list[Demonstration]] | None,
                 soft: SoftPrompt | None, bar: Progress | None = None) -> tuple[Tensor, Tensor, int]:
        """``([N, H]`` hidden states at ``[P]``, ``[N, C]`` direct first-token class log-probs, tokens run)."""
        lm = self.lm
        jobs = [Job(0, e, lm.encode(prompt, ex, demos[e]) if demos else lm.encode(prompt, ex))
                for e, ex in enumerate(examples)]
        table = lm.word_table(prompt, self.task.labels) if soft is None or soft.head is None else None
        head: torch.nn.Module = lm.model.get_output_embeddings()  # type: ignore[operator]
        hidden = torch.empty(len(examples), lm.output_embedding_matrix().shape[1])
        direct = torch.zeros(len(examples), len(self.task.labels))
        for batch in buckets(jobs, self.batch_size, self.max_tokens, self.stats):
            h = lm.head_features([j.encoded for j in batch], soft)                         # [B, H]
            rows = torch.tensor([j.example for j in batch])
            hidden[rows] = upcast(h).cpu()
            if table is not None:
                first = torch.tensor([w[0] for ws in table for w in ws], device=h.device)
                logp = upcast(head(h)).log_softmax(-1)[:, first]                            # [B, W]
                direct[rows] = logsumexp_classes(logp, table).log_softmax(-1).cpu()
            if bar is not None:
                bar.advance(len(batch))
        return hidden, direct, sum(len(j.encoded) for j in jobs)

    def fit(self, prompt: Prompt, examples: Sequence[Example], demos: list[list[Demonstration]] | None,
            soft: SoftPrompt | None) -> Rule:
        """``prompt``'s centroid rule with its centroids and scale estimated on labelled ``examples``."""
        rule = prompt.rule
        missing = [lab for y, lab in enumerate(self.task.labels) if not any(ex.label == y for ex in examples)]
        if missing:
            raise AutopromptError(f"rule 'centroid' needs at least one labelled example of every class to fit its "
                                  f"centroids; the fitting examples have none of {missing}")
        hidden, _, _ = self.features(prompt, examples, demos, soft)
        labels = torch.tensor([ex.label for ex in examples])
        classes = range(len(self.task.labels))
        points = _normalised(hidden, rule).double()                                            # [N, H]
        center = spread = None
        if rule.standardise:
            within = torch.cat([points[labels == y] - points[labels == y].mean(0) for y in classes])
            # pooled within-class deviation; a floor keeps a dimension that never varies from dividing by 0
            sd = within.pow(2).mean(0).sqrt()
            sd = sd.clamp(min=max(float(sd.mean()) * 1e-3, 1e-12))
            center, spread = points.mean(0), sd
            points = (points - center) / spread
        cents = torch.stack([points[labels == y].mean(0) for y in classes])                     # [C, H]
        # each example's distance to its own class's centroid without it (leave-one-out), so the temperature
        # is fitted on distances like those of unseen inputs, not on examples that pulled their centroid
        dist = distances(points, cents, rule.distance)                                          # [N, C]
        counts = torch.bincount(labels, minlength=len(classes)).double()
        rows = torch.arange(len(labels))
        alone = counts[labels] < 2  # an example alone in its class has no centroid without it
        own = (cents[labels] * counts[labels, None] - points) / (counts[labels, None] - 1).clamp(min=1)
        loo = dist.clone()
        loo[rows, labels] = distances(points, own, rule.distance)[rows, rows]
        scale = fit_temperature(-loo[~alone], labels[~alone]) if bool((~alone).any()) else float(dist.mean())
        if not math.isfinite(scale) or scale <= 0:
            scale = 1.0
        return Rule(rule.name, rule.length_norm, rule.distance, rule.normalise, rule.standardise,
                    {lab: tuple(cents[y].tolist()) for y, lab in enumerate(self.task.labels)}, scale,
                    None if center is None else tuple(center.tolist()),
                    None if spread is None else tuple(spread.tolist()))


def _labels(examples: Sequence[Example]) -> Tensor:
    return torch.tensor([ex.label for ex in examples])


def fit_temperature(scores: Tensor, labels: Tensor) -> float:
    """The temperature ``T`` that maximises the mean log-likelihood of ``labels`` (Laplace-smoothed) under
    ``softmax(scores / T)`` (Guo et al.'s temperature scaling), searched on a log grid around the
    scores' spread.

    Why: the margin objective and the gate compare class log-prob margins across rules; a channel
    score (a whole input's log-likelihood) or a centroid distance has a scale of its own, and without a
    fitted temperature the rule with the larger scale would win on scale alone.
    """
    n, classes = scores.shape
    spread = float(scores.std()) if scores.numel() > 1 else 1.0
    spread = spread if math.isfinite(spread) and spread > 0 else 1.0
    grid = spread * torch.logspace(-3, 2, 121, dtype=torch.double)                         # [G]
    logp = (scores.double()[None] / grid[:, None, None]).log_softmax(-1)                  # [G, N, C]
    # Laplace-smoothed targets, as if one more example per class had come with a uniform label: on a few
    # separable examples the plain likelihood grows without bound as T -> 0, and the rule would claim
    # certainty (margins of hundreds of nats) that 16 examples cannot support
    smooth = (classes - 1) / (n + classes)
    target = torch.full((n, classes), smooth / max(classes - 1, 1), dtype=torch.double)
    target[torch.arange(n), labels] = 1 - smooth
    likelihood = (logp * target[None]).sum(-1).mean(-1)                                   # [G]
    return float(grid[int(likelihood.argmax())])


def _normalised(hidden: Tensor, rule: Rule) -> Tensor:
    return torch.nn.functional.normalize(hidden, dim=-1) if rule.normalise else hidden


def rule_space(hidden: Tensor, rule: Rule) -> Tensor:
    """``[N, H]`` hidden states in the space a fitted centroid rule measures in (normalised, standardised)."""
    points = _normalised(hidden, rule).double()
    if rule.standardise:
        assert rule.center is not None and rule.spread is not None  # a fitted rule has both
        points = (points - torch.tensor(rule.center, dtype=torch.double)) / torch.tensor(rule.spread,
                                                                                       dtype=torch.double)
    return points


def distances(points: Tensor, centroids: Tensor, kind: str) -> Tensor:
    """``[N, C]`` distance of each point ``[N, H]`` to each centroid ``[C, H]``: ``1 − cos`` or Euclidean."""
    if kind == "cosine":
        return 1 - torch.nn.functional.normalize(points, dim=-1) @ torch.nn.functional.normalize(centroids, dim=-1).T
    return torch.cdist(points, centroids)


def centroid_logprobs(rule: Rule, hidden: Tensor, labels: Sequence[str], direct: Tensor | None = None) -> Tensor:
    """``[N, C]`` class log-probs of hidden states ``[N, H]`` under a fitted centroid rule:
    ``log_softmax(−distance / scale + 1e-6 · direct)``, measured in `rule_space` (in float64)."""
    assert rule.centroids is not None and rule.scale is not None  # checked by RuleScorer.check
    cents = torch.tensor([list(rule.centroids[lab]) for lab in labels], dtype=torch.double)      # [C, H]
    scores = -distances(rule_space(hidden, rule), cents, rule.distance) / rule.scale
    if direct is not None:
        scores = scores + TIE_BREAK * direct.double()
    return scores.log_softmax(-1).float()


def forwards_per_example(prompt: Prompt, labels: Sequence[str]) -> int:
    """Example-forwards one example costs ``prompt``: one per label word under ``channel``, else one."""
    if prompt.rule.name == "channel":
        return sum(len(words) for words in prompt.verbalizer.for_labels(labels))
    return 1
