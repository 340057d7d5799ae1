"""The ``verbalizer`` strategy: candidate words, their statistics and ranking, the two phases (see the
package docstring)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Required

import torch

from autoprompt import AnyPrompt, AutopromptError, Example, Prompt, Verbalizer
from autoprompt.search import SearchContext, Searcher, SearchState, SlotReadout, hyper, starting_prompt

from .ranking import best_assignments, channel_ranking


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

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

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
        hidden, logp_first = ctx.ask(SlotReadout).slot_features(encoded)
        scores = logp_first[:, [toks[0] for _, toks in words]].clone()
        multi = [j for j, (_, toks) in enumerate(words) if len(toks) > 1]
        for start in range(0, len(multi), 64):  # multi-token words: exact scores, one "class" per word
            chunk = multi[start : start + 64]
            scores[:, chunk] = ctx.ask(SlotReadout).word_logprobs(encoded, [[words[j][1]] for j in chunk])
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
                top, scores = channel_ranking(ctx, prompt, examples, labels, words, scores, top, start_words)
            state["ranked"] = [[words[j][0] for j in row] for row in top.tolist()]
            if self.words_per_class == 1:
                pairs = best_assignments(scores, labels, top, self.n_pairs, self.objective)
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
