"""``rule``: choose the decision rule — the start prompt read as ``direct``, ``channel`` and ``centroid``.

Every other part of the start is kept; what changes is how its class scores are read
(`autoprompt.prompts.Rule`), uncalibrated or with the search's calibration. Each candidate is judged
by two-fold cross-fitting on train: its centroids, temperature (and calibration prior) are fitted on
one class-stratified half and its objective measured on the other, then the halves swap; the two
objectives are averaged. A centroid rule fitted and judged on the same examples would look better
than it is. The reported candidates are fitted on all of train,
best first, and the core's gate compares them with the start as usual, so ``direct`` stays unless
another rule is reliably better.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Required, TypedDict

from autoprompt import RULES, AnyPrompt, AutopromptError, Example, Rule, prompt_from_json
from autoprompt.search import SearchContext, Searcher, SearchState
from autoprompt.search.selection import objective_score


class RankedRule(TypedDict):
    rule: dict[str, Any]     # `Rule.to_json`
    calibration: str
    score: float             # the cross-fitted objective: the mean over the two folds
    folds: list[float]


class RuleState(SearchState, total=False):
    prompt: Required[dict[str, Any]]  # the start prompt (`prompt_from_json`)
    ranked: list[RankedRule]          # every rule × calibration, best first (after the one step)


@dataclass
class RuleChoice(Searcher[RuleState]):
    """The decision rule for the start prompt, chosen by cross-fitting on train.

    Args:
        rules: the candidate rules, comma-separated (``channel`` is skipped on a masked LM or a prompt
            with a soft part, where it cannot read).
        length_norm: ``channel``: divide the input's log-likelihood by its token count.
        distance: ``centroid``: ``euclidean`` or ``cosine``.
        standardise: ``centroid``: measure in per-dimension standardised units (see `Rule`).
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    name = "rule"
    summary = "the decision rule: direct, channel (Min et al. 2022) or centroid (Hidden Calibration), cross-fitted"
    carries = frozenset({"template", "triggers", "verbalizer", "demos", "soft"})
    default_budget = 1500

    rules: str = "direct,channel,centroid"
    length_norm: bool = False
    distance: str = "euclidean"
    standardise: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [r for r in self._rules() if r not in RULES]
        if unknown or not self._rules():
            raise AutopromptError(f"rule: `rules` must list some of {', '.join(RULES)}, got {self.rules!r}",
                                  params=("rules",))
        Rule("centroid", distance=self.distance)  # type: ignore[arg-type]  # validates the name

    def _rules(self) -> list[str]:
        return [r.strip() for r in self.rules.split(",") if r.strip()]

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: the start prompt on dev; the step: each rule fitted and scored on both halves, then on all
        # of train (channel reads each input once per label word: two, at the least)
        per_rule = {"direct": 2 * train, "channel": 2 * 2 * train, "centroid": 4 * train}
        step = sum(2 * per_rule[r] + self._calibration_cost(train) * 2 for r in self._rules())
        return dev, step

    def candidate_rules(self, ctx: SearchContext) -> list[Rule]:
        """The rules this model and prompt can read, with the options given."""
        out = []
        for name in self._rules():
            if name == "channel" and (ctx.lm.kind != "causal" or ctx.start.soft is not None):
                continue
            out.append(Rule(name, length_norm=self.length_norm, distance=self.distance,  # type: ignore[arg-type]
                            standardise=self.standardise) if name != "direct" else Rule())
        return out

    def start(self, ctx: SearchContext) -> RuleState:
        return {"prompt": ctx.start.to_json(), "best_dev": ctx.evaluator.score(ctx.start, ctx.dev).score}

    def step(self, ctx: SearchContext, state: RuleState) -> RuleState:
        halves = _halves(ctx.train, ctx.seed)
        start = prompt_from_json(state["prompt"])
        ranked: list[RankedRule] = []
        # a centroid rule is class-balanced by construction, and a prior divided out can undo that: each
        # rule competes uncalibrated and with the search's calibration
        calibrations = list(dict.fromkeys(("none", ctx.calibration)))
        for rule in self.candidate_rules(ctx):
            folds: dict[str, list[float]] = {c: [] for c in calibrations}
            for fit, judge in (halves, halves[::-1]):
                ruled = ctx.evaluator.fit_rule([start], rule, fit)  # fitted once per fold, then calibrated each way
                for calibration in calibrations:
                    prompt = ctx.evaluator.calibrate(ruled, calibration, fit)[0]
                    folds[calibration].append(objective_score(ctx.evaluator.score(prompt, judge), self.objective))
            ranked += [{"rule": rule.to_json(), "calibration": c, "score": sum(v) / len(v), "folds": v}
                       for c, v in folds.items()]
        ranked.sort(key=lambda r: -r["score"])
        ctx.report({"rules": {f"{r['rule']['name']}/{r['calibration']}": round(r["score"], 4) for r in ranked}})
        return {**state, "ranked": ranked, "done": True}

    def candidates(self, ctx: SearchContext, state: RuleState) -> list[AnyPrompt]:
        start = prompt_from_json(state["prompt"])
        fitted: dict[str, list[AnyPrompt]] = {}  # one fit on all of train per rule, whatever its calibrations
        out = []
        for row in state.get("ranked", []):
            key = json.dumps(row["rule"], sort_keys=True)
            if key not in fitted:
                fitted[key] = ctx.evaluator.fit_rule([start], Rule.from_json(row["rule"]), ctx.train)
            out.append(ctx.evaluator.calibrate(fitted[key], row["calibration"], ctx.train)[0])
        return out or [start]

    def best(self, ctx: SearchContext, state: RuleState) -> AnyPrompt:
        return self.candidates(ctx, state)[0]

    def details(self, ctx: SearchContext, state: RuleState) -> dict[str, Any]:
        return {"rules": [{"rule": r["rule"]["name"], "calibration": r["calibration"],
                           "cross_fitted_objective": r["score"], "folds": r["folds"]} for r in state.get("ranked", [])]}


def _halves(train: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Train in two class-stratified halves (seeded): every class in both where it has two examples."""
    rng = random.Random(f"rule-halves:{seed}")
    by_class: dict[int, list[Example]] = {}
    for ex in train:
        by_class.setdefault(ex.label, []).append(ex)
    first: list[Example] = []
    second: list[Example] = []
    for _, members in sorted(by_class.items()):
        shuffled = rng.sample(members, len(members))
        first += shuffled[: (len(shuffled) + 1) // 2]
        second += shuffled[(len(shuffled) + 1) // 2 :]
    return first, second
