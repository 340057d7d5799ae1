"""``demos``: in-context demonstrations — GPT-3's random few-shot prompt, KATE's nearest neighbours, and a
searched set and order.

The template and label words stay the task's (or the ones given); what changes is which labelled
train examples the prompt shows before each query (`autoprompt.prompts.Demonstrations`).

* ``random`` (Brown et al., 2020): ``k`` examples per class (or ``k`` in all) drawn from the pool,
  seeded, in the chosen ``order``.
* ``similar`` (KATE, Liu et al., 2022): the pool itself goes into the prompt; at prediction time each
  query is shown its ``k`` nearest pool examples by the frozen model's sentence embedding.
* ``search``: greedy search over swaps. Train is split into a pool the demonstrations come from
  and a scoring set they are judged on (never both: an example shown its own label would leak);
  each step proposes ``num_candidates`` sets that swap one demonstration for another pool example
  of the same class, scores them with the current set as one batched job (each set's block runs
  once, `autoprompt.scoring.sharing`), and keeps the best if its calibrated margin on the scoring set is
  strictly higher.

``order=entropy`` is Lu et al. (2022)'s GlobalE: of ``num_orders`` permutations, the one whose
predictions over unlabelled train inputs have the most even label distribution (a label-free guard
against the orders that make the model answer one class). The manual zero-shot prompt competes in
the core's final selection, as for every strategy.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Required

from autoprompt import AnyPrompt, AutopromptError, Demonstration, Demonstrations, Example, Prompt
from autoprompt.search import SearchContext, Searcher, SearchState, hyper, keep_best, starting_prompt


class DemosState(SearchState, total=False):
    base: Required[dict[str, Any]]                 # the prompt the demonstrations go into (`Prompt.to_json`)
    pool: Required[list[int]]                      # the train indices demonstrations are drawn from
    scored: Required[dict[str, dict[str, Any]]]    # `keep_best` sets judged so far: ``score``, ``prompt``
    current: Required[list[int]]                   # the current set (train indices, in order)
    fixed: dict[str, Any]                          # ``similar``: the prompt that retrieves from the pool
    seen: list[str]                                # every set judged (`_key`), so none is judged twice


@dataclass
class Demos(Searcher[DemosState]):
    """Demonstrations from train, shown with every query.

    Args:
        method: ``random`` (GPT-3), ``similar`` (KATE: nearest pool examples per query) or ``search``.
        k: demonstrations per class (``per_class``) or in all.
        per_class: ``k`` counts per class (LM-BFF's one per class) instead of in all.
        separator: text between demonstrations and before the query.
        order: ``given`` (pool order), ``random`` or ``entropy`` (GlobalE over ``num_orders`` permutations).
        num_orders: permutations ``order=entropy`` compares.
        pool_size: train examples demonstrations come from, class-balanced (default: all of train; half
            of it for ``search``, whose other half scores the candidates).
        num_candidates: swapped sets ``search`` scores per step.
        overflow: an input longer than the model's context: ``error`` or ``drop`` demonstrations.
        template: a template instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    name = "demos"
    searches = frozenset({"demos"})
    carries = frozenset({"template", "triggers", "verbalizer"})
    summary = "in-context demonstrations: random (GPT-3), similar (KATE), or a searched set and order"
    default_budget = 3000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"type": "int", "low": 1, "high": 4},
        "order": {"type": "categorical", "choices": ["random", "entropy"]},
    }

    method: Literal["random", "similar", "search"] = "random"
    k: int = hyper(1, low=1)
    per_class: bool = True
    separator: str = "\n\n"
    order: Literal["given", "random", "entropy"] = "random"
    num_orders: int = hyper(4, low=1)
    pool_size: int | None = hyper(None, low=1)
    num_candidates: int = hyper(8, low=1)
    overflow: Literal["error", "drop"] = "error"
    template: str | None = None
    verbalizer: str | None = None

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        pool = self._pool_count(train)
        ordering = self.num_orders * train if self.order == "entropy" and self.method != "similar" else 0
        start = self._calibration_cost(train) + dev + ordering
        if self.method != "search":  # the one step scores the chosen prompt (similar: one embedding per text)
            return start, self._calibration_cost(train) + dev + (train + dev if self.method == "similar" else 0)
        return start, (self.num_candidates + 1) * (train - pool) + dev

    # ---- the start: a pool, a first set, its order ---------------------------------------------

    def start(self, ctx: SearchContext) -> DemosState:
        base = starting_prompt(ctx, self.template, self.verbalizer)
        if self.method == "search" and self._pool_count(len(ctx.train)) >= len(ctx.train):
            # judging swaps on dev would leave the final selection nothing the search did not fit on
            raise AutopromptError(f"demos search judges swaps on the train examples outside the pool; give "
                                  f"`pool_size` below the {len(ctx.train)} train examples", params=("pool_size",))
        rng = ctx.rng(-1)
        pool = self._balanced(ctx, list(range(len(ctx.train))), self._pool_count(len(ctx.train)), rng)
        state: DemosState = {"base": base.to_json(), "pool": pool, "scored": {}, "current": []}
        if self.method == "similar":
            prompt = base.with_demos(Demonstrations(pool=tuple(self._demo(ctx, i) for i in pool),
                                                    k=self._count(ctx), separator=self.separator,
                                                    overflow=self.overflow))
            state["fixed"] = prompt.to_json()
        else:
            chosen = self._balanced(ctx, pool, self._count(ctx), rng)
            state["current"] = self._ordered(ctx, base, chosen, rng)
        # search starts from its first set; random and similar score theirs in their one step
        first = self._prompt(ctx, state, state["current"]) if self.method == "search" else base
        return {**state, "best_dev": ctx.evaluator.score(ctx.calibrate([first])[0], ctx.dev).score}

    def _pool_count(self, train: int) -> int:
        """How many of ``train`` examples form the pool (`search` keeps the rest to judge swaps on)."""
        default = train // 2 if self.method == "search" else train
        return min(self.pool_size or default, train)

    def _count(self, ctx: SearchContext) -> int:
        return self.k * len(ctx.task.labels) if self.per_class else self.k

    def _balanced(self, ctx: SearchContext, indices: list[int], n: int, rng: random.Random) -> list[int]:
        """``n`` of ``indices``, as evenly over the classes as they allow (round-robin over shuffled classes)."""
        by_class: dict[int, list[int]] = {}
        for i in rng.sample(indices, len(indices)):
            by_class.setdefault(ctx.train[i].label, []).append(i)
        queues = [by_class[c] for c in sorted(by_class)]
        out: list[int] = []
        while len(out) < min(n, len(indices)):
            for queue in queues:
                if queue and len(out) < n:
                    out.append(queue.pop())
        return out

    def _ordered(self, ctx: SearchContext, base: Prompt, chosen: list[int], rng: random.Random) -> list[int]:
        if self.order == "given" or len(chosen) < 2:
            return chosen
        if self.order == "random":
            return rng.sample(chosen, len(chosen))
        orders = [rng.sample(chosen, len(chosen)) for _ in range(min(self.num_orders, math.factorial(len(chosen))))]
        shown = set(chosen)
        probe = [ex for i, ex in enumerate(ctx.train) if i not in shown] or ctx.train  # labels unused
        results = ctx.evaluator.score_many([self._prompt_of(ctx, base, o) for o in orders], probe)
        return orders[max(range(len(orders)), key=lambda j: _label_entropy(results[j].preds.tolist()))]

    # ---- search: greedy swaps judged on the train examples outside the pool ---------------------

    def step(self, ctx: SearchContext, state: DemosState) -> DemosState:
        if self.method != "search":  # random and similar: score the prompt the start chose, and stop
            chosen = ctx.calibrate([self._prompt(ctx, state, state["current"])])[0]
            dev = ctx.evaluator.score(chosen, ctx.dev).score
            return {**state, "best_dev": max(state["best_dev"], dev), "done": True}
        scoring = self._scoring(ctx, state)
        current, rng = list(state["current"]), ctx.rng()
        seen = set(state.get("seen", []))
        fresh = [s for s in self._swaps(ctx, state, current, rng) if _key(s) not in seen]
        if not fresh:  # every swap was judged before: the search has converged
            return {**state, "done": True}
        sets = [current, *fresh]
        prompts = ctx.calibrate([self._prompt(ctx, state, s) for s in sets], inputs=scoring)
        scores = ctx.objective_scores(prompts, scoring)
        scored = {**state["scored"], **{_key(s): {"score": v, "prompt": p.to_json()}
                                        for s, v, p in zip(sets, scores, prompts, strict=True)}}
        best = max(range(len(sets)), key=lambda i: scores[i])
        accepted = best > 0 and scores[best] > scores[0]
        state = {**state, "scored": keep_best(scored), "current": sets[best] if accepted else current,
                 "seen": sorted(seen | {_key(x) for x in sets})}
        if accepted:
            state["best_dev"] = max(state["best_dev"], ctx.evaluator.score(prompts[best], ctx.dev).score)
        ctx.report({"train_objective": scores[best if accepted else 0], "accepted": accepted,
                    "candidates": len(sets) - 1})
        return state

    def _swaps(self, ctx: SearchContext, state: DemosState, current: list[int],
               rng: random.Random) -> list[list[int]]:
        """Up to ``num_candidates`` distinct sets, each ``current`` with one demonstration replaced by
        another pool example (of the same class with ``per_class``), in its place."""
        out: dict[str, list[int]] = {}
        for _ in range(4 * self.num_candidates):
            if len(out) >= self.num_candidates or not current:
                break
            pos = rng.randrange(len(current))
            options = [i for i in state["pool"] if i not in current
                       and (not self.per_class or ctx.train[i].label == ctx.train[current[pos]].label)]
            if options:
                swapped = [*current[:pos], rng.choice(options), *current[pos + 1:]]
                out.setdefault(_key(swapped), swapped)
        return list(out.values())

    def _scoring(self, ctx: SearchContext, state: DemosState) -> list[Example]:
        pool = set(state["pool"])
        return [ex for i, ex in enumerate(ctx.train) if i not in pool]

    # ---- prompts -----------------------------------------------------------------------------------

    def _demo(self, ctx: SearchContext, i: int) -> Demonstration:
        example = ctx.train[i]
        return Demonstration(dict(example.fields), ctx.task.labels[example.label])

    def _prompt_of(self, ctx: SearchContext, base: Prompt, chosen: list[int]) -> Prompt:
        return base.with_demos(Demonstrations(tuple(self._demo(ctx, i) for i in chosen), self.separator,
                                              overflow=self.overflow))

    def _prompt(self, ctx: SearchContext, state: DemosState, chosen: list[int]) -> Prompt:
        if "fixed" in state:
            return Prompt.from_json(state["fixed"])
        return self._prompt_of(ctx, Prompt.from_json(state["base"]), chosen)

    def candidates(self, ctx: SearchContext, state: DemosState) -> list[AnyPrompt]:
        ranked: list[AnyPrompt] = [Prompt.from_json(e["prompt"]) for e in state["scored"].values()]
        return ranked or ctx.calibrate([self._prompt(ctx, state, state["current"])])

    def best(self, ctx: SearchContext, state: DemosState) -> AnyPrompt:
        return self.candidates(ctx, state)[0]

    def fitted(self, ctx: SearchContext, state: DemosState) -> list[Example]:
        """The pool (a pool example scored with its own label shown would leak), and for ``search``
        the scoring set the swaps were judged on."""
        pool = set(state["pool"])
        return [ex for i, ex in enumerate(ctx.train) if i in pool or self.method == "search"]

    def details(self, ctx: SearchContext, state: DemosState) -> dict[str, Any]:
        shown = len(state["current"]) if self.method != "similar" else self._count(ctx)
        return {"method": self.method, "demonstrations": shown, "pool": len(state["pool"])}


def _label_entropy(preds: list[int]) -> float:
    counts = Counter(preds).values()
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def _key(indices: list[int]) -> str:
    return ",".join(map(str, indices))
