"""``verbalizer``: label-word search — AutoPrompt's probe, LM-BFF's auto-L and PETAL in one strategy.

The template stays fixed; what changes is which words stand for each label. Every method
ranks candidate words per class from statistics at the prediction slot over train examples:

* ``probe`` (AutoPrompt's label search): a logistic-regression probe on the hidden state the LM
  head sees at ``[P]``; each vocabulary word scores ``softmax_c(w_c · e_word + b_c)``, its output
  embedding against the probe's weights and bias;
* ``likelihood`` (LM-BFF auto-L): per class, the mean log-probability of the word over that
  class's train examples;
* ``petal`` (Schick et al., 2020): the balanced likelihood ratio, log of the word's mean
  probability on the class's examples over its mean probability on the other classes' examples
  (each class weighted equally).

The statistics are calibrated as the search is (``calibration``): each word's log-prob has the
word's log-prob on content-free inputs (``contextual``) or its mean probability over the train
inputs (``prior``) taken out, so a word the model says everywhere ("great") does not win by
being frequent. Calibration alone is a pointwise mutual information, which favours words the model
almost never says at the slot (on 16 shots, rare words whose few mentions happen to fall in one
class: ``anyway``/``enhanced`` for SST-2); so candidates are first cut to the ``vocab`` words the
model finds most probable at ``[P]`` over the train inputs, before calibration, as LM-BFF's
auto-L keeps the words the model already predicts there.

Under the ``channel`` decision rule (``rule=channel``), a word is used *before* the input (the class
score is the input's log-likelihood after the label part), so the statistics above only propose a
shortlist (the top ``k`` per class, fewer if the budget is short): each shortlisted word's channel
log-likelihood of every statistics example is computed (`Evaluator.channel_word_logliks`, one
forward per word and example), centred per example, and the words of a class are re-ranked by their
mean on the class's examples minus the other classes' means — words that make their own class's
inputs likely — and the assignments below are ranked on those channel scores.

Then selection on train, shared by all methods: with ``words_per_class=1``, every assignment of
one of the top-``k`` words to each class (the starting verbalizer's words always among them) is
ranked by the search's objective on the train statistics, and the best ``n_pairs`` (plus the
starting verbalizer) are re-scored exactly, calibrated, through the evaluator on the same train
examples; with more words per class, the top words per class form one verbalizer. The best by
train are the candidates the core re-scores on dev against the manual prompt. Candidates are
whole words (word-initial tokens); with ``max_word_tokens > 1``, frequent words of the train
inputs that take up to that many tokens join them, scored exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Required

import torch

from autoprompt import AnyPrompt, AutopromptError, Example, Prompt, Verbalizer
from autoprompt.search import SearchContext, Searcher, SearchState, hyper, starting_prompt
from autoprompt.search.selection import per_example


class VerbalizerState(SearchState, total=False):
    prompt: Required[dict[str, Any]]          # the starting prompt (`Prompt.to_json`)
    phase: Required[str]                      # ``rank`` (the statistics pass), then ``select`` (exact re-scoring)
    ranked_prompts: Required[list[dict[str, Any]]]  # the candidates, best first by train objective
    ranked: list[list[str]]                   # after ``rank``: each class's shortlisted words, best first
    pairs: list[list[list[str]]]              # after ``rank``: the verbalizers ``select`` re-scores (words per class)


@dataclass
class VerbalizerSearch(Searcher[VerbalizerState]):
    """Label-word search.

    Args:
        method: ``probe``, ``likelihood`` or ``petal``.
        k: candidate words kept per class.
        vocab: the candidate vocabulary: the words most probable at ``[P]`` over the train inputs
            (uncalibrated), the starting words always kept; 0 keeps every whole word.
        n_pairs: assignments (one word per class) re-scored exactly on train, best by the train statistics first.
        words_per_class: words per label in the result (1: assignment search).
        max_word_tokens: longest candidate word in tokens (>1 adds multi-token words).
        max_examples: train examples used for the statistics.
        probe_c: inverse regularisation strength of the probe.
        prompt: a ``prompt.json`` to start from (its template and triggers; e.g. a gradient run's).
        template: a template instead of the task's manual one.
    """

    name = "verbalizer"
    needs_every_class = True
    searches = frozenset({"verbalizer"})
    carries = frozenset({"template", "triggers", "demos"})
    summary = "label words: AutoPrompt probe, LM-BFF auto-L (likelihood) or PETAL likelihood ratio"
    default_budget = 3000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "method": {"type": "categorical", "choices": ["probe", "likelihood", "petal"]},
        "k": {"type": "int", "low": 4, "high": 30},
        "vocab": {"type": "int", "low": 100, "high": 5000, "log": True},
        "n_pairs": {"type": "int", "low": 5, "high": 50, "log": True},
    }

    method: Literal["probe", "likelihood", "petal"] = "likelihood"
    k: int = hyper(10, low=1)
    # held out (benchmarks/selection_defaults.py --part verbalizer, 4 GLUE-train splits): the best candidate
    # scored 0.670 with 1000 words vs 0.593 with every word (anyway/enhanced), 0.7075 vs 0.6771 after the gate
    vocab: int = 1000
    n_pairs: int = hyper(20, low=1)
    words_per_class: int = hyper(1, low=1)
    max_word_tokens: int = hyper(1, low=1)
    max_examples: int = hyper(256, low=1)
    probe_c: float = 1.0
    prompt: str | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab < 0:
            raise AutopromptError(f"verbalizer: vocab must be 0 (every word) or a positive count, got {self.vocab}")

    # ---- statistics -------------------------------------------------------------------------

    def _start_prompt(self, ctx: SearchContext) -> Prompt:
        if self.prompt:
            if not Path(self.prompt).is_file():
                raise AutopromptError(f"verbalizer: prompt file {self.prompt} does not exist")
            return Prompt.load(self.prompt)
        return starting_prompt(ctx, self.template)

    def word_candidates(self, ctx: SearchContext, prompt: Prompt,
                        examples: list[Example]) -> list[tuple[str, tuple[int, ...]]]:
        """(word, token ids) for whole words that tokenize back to themselves after ``[P]``, and the
        starting verbalizer's words (whatever their length)."""
        lm = ctx.lm
        ids = lm.word_start_tokens().nonzero()[:, 0].tolist()
        out, seen = [], set()
        for words in prompt.verbalizer.words.values():
            for word in words:
                if word not in seen:
                    out.append((word, self._tokens(ctx, prompt, word)))
                    seen.add(word)
        for tok, text in zip(ids, lm.tokenizer.convert_ids_to_tokens(ids), strict=True):
            word = lm.tokenizer.convert_tokens_to_string([text]).strip()
            if word and word not in seen and self._tokens(ctx, prompt, word) == (tok,):
                out.append((word, (tok,)))
                seen.add(word)
        if self.max_word_tokens > 1:
            counts = Counter(w.strip(".,!?;:'\"()").lower() for ex in examples for v in ex.fields.values()
                             for w in v.split())
            for word, _ in counts.most_common(2000):
                if word.isalpha() and word not in seen:
                    toks = self._tokens(ctx, prompt, word)
                    if 1 < len(toks) <= self.max_word_tokens:
                        out.append((word, toks))
                        seen.add(word)
        return out

    @staticmethod
    def _tokens(ctx: SearchContext, prompt: Prompt, word: str) -> tuple[int, ...]:
        """The word's token ids at ``[P]``, as `FrozenLM.word_table` tokenizes a label word."""
        space = next(s.space for s in prompt.template.segments if s.kind == "predict")
        return ctx.lm.tokenize(space + word)

    def word_logprobs(self, ctx: SearchContext, prompt: Prompt, examples: list[Example],
                      words: list[tuple[str, tuple[int, ...]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(word | example) [N, W], hidden at the slot [N, H])``; charges the budget."""
        encoded = [ctx.lm.encode(prompt, ex) for ex in examples]
        hidden, logp_first = ctx.slot_features(encoded)
        scores = logp_first[:, [toks[0] for _, toks in words]].clone()
        multi = [j for j, (_, toks) in enumerate(words) if len(toks) > 1]
        for start in range(0, len(multi), 64):  # multi-token words: exact scores, one "class" per word
            chunk = multi[start : start + 64]
            scores[:, chunk] = ctx.word_logprobs(encoded, [[words[j][1]] for j in chunk])
        return scores, hidden

    def plausible(self, prompt: Prompt, words: list[tuple[str, tuple[int, ...]]],
                  scores: torch.Tensor) -> tuple[list[tuple[str, tuple[int, ...]]], torch.Tensor]:
        """The ``vocab`` words with the highest mean probability at the slot (uncalibrated ``scores``,
        ``[N, W]``), the starting verbalizer's words first and always kept, in their original order."""
        if not self.vocab or self.vocab >= len(words):
            return words, scores
        mean = torch.logsumexp(scores, 0)                                                          # [W]
        start = {w for ws in prompt.verbalizer.words.values() for w in ws}
        mean[[j for j, (w, _) in enumerate(words) if w in start]] = math.inf
        keep = mean.topk(max(self.vocab, len(start))).indices.sort().values
        return [words[j] for j in keep.tolist()], scores[:, keep]

    def word_log_prior(self, ctx: SearchContext, prompt: Prompt, scores: torch.Tensor,
                       words: list[tuple[str, tuple[int, ...]]]) -> torch.Tensor:
        """``[W]`` the log-prob each word has regardless of the input, as the search calibrates:
        on content-free inputs (``contextual``), its mean probability over the train inputs
        (``prior``), or zeros (``none``)."""
        if ctx.calibration == "contextual":
            free, _ = self.word_logprobs(ctx, prompt, ctx.evaluator.content_free(), words)
            return torch.logsumexp(free, 0) - torch.log(torch.tensor(float(len(free))))
        if ctx.calibration == "prior":
            return torch.logsumexp(scores, 0) - torch.log(torch.tensor(float(len(scores))))
        return torch.zeros(scores.shape[1])

    def rank(self, ctx: SearchContext, scores: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor,
             words: list[tuple[str, tuple[int, ...]]]) -> torch.Tensor:
        """``[C, W]`` method score of every candidate word for every class (higher is better)."""
        n_classes = len(ctx.task.labels)
        present = [c for c in range(n_classes) if (labels == c).any()]
        if len(present) < n_classes:
            raise AutopromptError(f"verbalizer search needs train examples of every class; missing "
                                  f"{[ctx.task.labels[c] for c in range(n_classes) if c not in present]}")
        if self.method == "likelihood":
            return torch.stack([scores[labels == c].mean(0) for c in range(n_classes)])
        if self.method == "petal":
            # log of the mean probability within the class, per class, then a balanced ratio
            per_class = torch.stack([torch.logsumexp(scores[labels == c], 0) - torch.log(torch.tensor(
                float((labels == c).sum()))) for c in range(n_classes)])                            # [C, W]
            others = torch.stack([torch.logsumexp(torch.cat([per_class[:c], per_class[c + 1:]]), 0)
                                  - torch.log(torch.tensor(float(n_classes - 1))) for c in range(n_classes)])
            return per_class - others
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - optional heavy import

        probe = LogisticRegression(C=self.probe_c, max_iter=2000)
        probe.fit(hidden.double().numpy(), labels.numpy())
        weight = torch.tensor(probe.coef_, dtype=torch.float32)
        bias = torch.tensor(probe.intercept_, dtype=torch.float32)
        if n_classes == 2:  # sklearn keeps one row for two classes: class 1 vs class 0
            weight, bias = torch.cat([-weight, weight]) / 2, torch.cat([-bias, bias]) / 2
        out_emb = ctx.lm.output_embedding_matrix().detach().float().cpu()
        first = torch.tensor([toks[0] for _, toks in words])
        return (weight @ out_emb[first].T + bias[:, None]).softmax(0)                             # [C, W]

    def _channel_ranking(self, ctx: SearchContext, prompt: Prompt, examples: list[Example], labels: torch.Tensor,
                         words: list[tuple[str, tuple[int, ...]]], scores: torch.Tensor, top: torch.Tensor,
                         start_words: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Under the channel rule, the direct statistics only propose: the shortlist ``top`` (``[C, k]``
        word indices) is re-ranked within each class by how much more likely the word makes its class's
        inputs than the other classes' — each input's log-likelihood after the word's label prefix
        (`Evaluator.channel_word_logliks`), centred per input over the shortlist, its mean on the class
        minus the mean of the other classes' means — keeping as many words per class as the budget
        pays for (the starting word always). Returns the re-ranked ``[C, k']`` and ``[N, W]`` scores
        whose shortlisted columns hold the channel log-likelihoods, which the assignments rank by."""
        n_classes, n = top.shape[0], len(examples)
        reserve = 2 * n + len(ctx.dev)  # the select phase's exact re-scoring
        per_class = min(top.shape[1], max(1, int((ctx.budget_left - reserve) // (n_classes * n))))
        rows = [[j, *[i for i in row if i != j][: per_class - 1]] for row, j in zip(top.tolist(), start_words,
                                                                                       strict=True)]
        shortlist = list(dict.fromkeys(j for row in rows for j in row))
        if len(shortlist) < n_classes:  # fewer distinct words than classes: nothing to regroup
            return top, scores
        # one verbalizer holding every shortlisted word once; its grouping only feeds the encoder
        groups = [[words[j][0] for j in shortlist[c::n_classes]] for c in range(n_classes)]
        probe = dataclasses.replace(prompt, verbalizer=Verbalizer(dict(zip(ctx.task.labels, groups, strict=True))),
                                    rule=ctx.rule.unfitted())
        column = {j: col for col, j in enumerate(j for c in range(n_classes) for j in shortlist[c::n_classes])}
        raw = ctx.evaluator.channel_word_logliks(probe, examples)                                   # [N, U]
        centred = raw - raw.mean(1, keepdim=True)
        means = torch.stack([centred[labels == c].mean(0) for c in range(n_classes)])              # [C, U]
        contrast = means - (means.sum(0, keepdim=True) - means) / max(n_classes - 1, 1)              # [C, U]
        ranked = torch.tensor([sorted(row, key=lambda j: -float(contrast[c, column[j]])) for c, row in
                               enumerate(rows)])
        channel = torch.full((n, len(words)), -math.inf)
        for j, col in column.items():
            channel[:, j] = raw[:, col]
        return ranked, channel

    # ---- the strategy -------------------------------------------------------------------------

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: the starting prompt calibrated and on dev; a step: the ranking pass over the
        # statistics' examples (and content-free inputs), or the exact re-scoring of at least two
        # prompts and the best on dev
        stats = min(self.max_examples, train)
        ranking = stats + self._calibration_cost(3)
        return self._calibration_cost(train) + dev, max(ranking, 2 * stats + dev)

    def start(self, ctx: SearchContext) -> VerbalizerState:
        prompt = self._start_prompt(ctx)
        prompt.verbalizer.for_labels(ctx.task.labels)
        start = ctx.calibrate([prompt])[0]
        return {"prompt": prompt.to_json(), "ranked_prompts": [start.to_json()],
                "best_dev": ctx.evaluator.score(start, ctx.dev).score, "phase": "rank"}

    def step(self, ctx: SearchContext, state: VerbalizerState) -> VerbalizerState:
        prompt = Prompt.from_json(state["prompt"])
        examples = ctx.sample(ctx.train, self.max_examples, salt="stats")
        if state["phase"] == "rank":
            words = self.word_candidates(ctx, prompt, examples)
            scores, hidden = self.word_logprobs(ctx, prompt, examples, words)
            words, scores = self.plausible(prompt, words, scores)
            scores = scores - self.word_log_prior(ctx, prompt, scores, words)[None, :]             # calibrated
            labels = torch.tensor([ex.label for ex in examples])
            ranking = self.rank(ctx, scores, hidden, labels, words)
            top = ranking.topk(min(self.k, ranking.shape[1]), dim=1).indices                       # [C, k]
            # the starting verbalizer's first word per class stays a candidate of that class
            index = {w: j for j, (w, _) in enumerate(words)}
            start_words = [index[ws[0]] for ws in prompt.verbalizer.for_labels(ctx.task.labels)]
            top = torch.stack([row if j in row else torch.cat([row[:-1], torch.tensor([j])])
                               for row, j in zip(top, start_words, strict=True)])
            if ctx.rule.name == "channel":  # words that read well before their class's inputs
                top, scores = self._channel_ranking(ctx, prompt, examples, labels, words, scores, top, start_words)
            state["ranked"] = [[words[j][0] for j in row] for row in top.tolist()]
            if self.words_per_class == 1:
                pairs = self._assignments(scores, labels, top)
                state["pairs"] = [[[state["ranked"][c][i]] for c, i in enumerate(pair)] for pair in pairs]
            else:
                state["pairs"] = [[row[: self.words_per_class] for row in state["ranked"]]]
            state["phase"] = "select"
            ctx.report({"phase": "rank", "candidates": len(words), "ranked": state["ranked"]})
            return state
        # exact, calibrated re-scoring on the same train examples; the starting verbalizer competes
        verbalizers = [Verbalizer(dict(zip(ctx.task.labels, pair, strict=True))) for pair in state["pairs"]]
        found = list({p.fingerprint: p for p in (prompt, *(dataclasses.replace(prompt, verbalizer=v)
                                                           for v in verbalizers))}.values())  # the rest kept
        # as many as the budget pays for (calibration's content-free inputs and the dev check included)
        per_prompt = len(examples) + (len(ctx.evaluator.content_free()) if ctx.calibration == "contextual" else 0)
        found = found[: max(2, int((ctx.budget_left - len(ctx.dev)) // per_prompt))]
        found = ctx.calibrate(found, inputs=examples)
        train_scores = ctx.objective_scores(found, examples)
        order = sorted(range(len(found)), key=lambda i: -train_scores[i])
        state["ranked_prompts"] = [found[i].to_json() for i in order]
        state["best_dev"] = ctx.evaluator.score(found[order[0]], ctx.dev).score
        ctx.report({"phase": "select", "train_objective": [round(train_scores[i], 4) for i in order[:5]],
                    "best": found[order[0]].verbalizer.to_json()})
        return {**state, "done": True}

    def candidates(self, ctx: SearchContext, state: VerbalizerState) -> list[AnyPrompt]:
        return [Prompt.from_json(p) for p in state["ranked_prompts"]]

    def best(self, ctx: SearchContext, state: VerbalizerState) -> AnyPrompt:
        return self.candidates(ctx, state)[0]

    def _assignments(self, scores: torch.Tensor, labels: torch.Tensor, top: torch.Tensor) -> list[tuple[int, ...]]:
        """The ``n_pairs`` assignments (index into each class's top-k) with the best train objective.

        Exhaustive when there are at most 200,000 assignments, else a beam over classes (beam
        width ``50 * n_pairs``) scored on the classes assigned so far.
        """
        n_classes, k = top.shape
        cols = scores[:, top.reshape(-1)].view(len(labels), n_classes, k)                           # [N, C, k]

        def objective(assignments: torch.Tensor) -> torch.Tensor:                                  # [A, c] -> [A]
            """The objective on the classes assigned so far (examples of unassigned classes left out)."""
            c = assignments.shape[1]
            keep = labels < c
            if not keep.any() or c < 2:
                return torch.zeros(len(assignments))
            picked = cols[:, torch.arange(c)[None, :], assignments][keep].permute(1, 0, 2)          # [A, N', c]
            return per_example(picked, labels[keep], self.objective).mean(-1)

        def distinct(assignments: torch.Tensor) -> torch.Tensor:  # one class may not take another's word
            chosen = top[torch.arange(assignments.shape[1])[None, :], assignments].sort(-1).values
            return assignments[(chosen[:, 1:] != chosen[:, :-1]).all(-1)]

        if k ** n_classes <= 200_000:
            every = distinct(torch.tensor(list(itertools.product(range(k), repeat=n_classes))))
            acc = objective(every)
            order = acc.argsort(descending=True, stable=True)[: self.n_pairs]
            return [tuple(every[i].tolist()) for i in order]
        beam = torch.zeros(1, 0, dtype=torch.long)
        for _ in range(n_classes):
            grown = distinct(torch.cat([beam.repeat_interleave(k, 0), torch.arange(k).repeat(len(beam))[:, None]], 1))
            acc = objective(grown)
            beam = grown[acc.argsort(descending=True, stable=True)[: 50 * self.n_pairs]]
        return [tuple(a) for a in beam[: self.n_pairs].tolist()]
