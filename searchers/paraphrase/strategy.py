"""The ``paraphrase`` strategy: seeds, the beam of rewrites, selection (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from autoprompt import AnyPrompt, AutopromptError, Ensemble, Example, Prompt, Template
from autoprompt.search import SearchContext, Searcher, SearchState, TextWriting, hyper, starting_prompt

from .mining import mine
from .rewriting import ask, refill


class ParaphraseState(SearchState):
    pool: dict[str, float]   # every valid template scored: its train objective
    dev: dict[str, float]    # the dev score of each template that was in a beam
    beam: list[str]          # the templates the next round paraphrases
    dropped: int             # rewrites dropped as invalid (fields lost, [P] misplaced, ...)
    round: int


@dataclass
class Paraphrase(Searcher[ParaphraseState]):
    """Template mining and paraphrasing.

    Args:
        sources: comma-separated subset of ``manual``, ``mine``, ``paraphrase``.
        templates: extra seed templates, separated by ``||``.
        corpus: a text file to mine (default: the train inputs).
        num_mined: mined templates kept (most frequent first).
        num_paraphrases: rewrites asked for per beam template and round.
        beam: templates paraphrased again in the next round.
        score_examples: train examples every candidate is scored on.
        select: ``auto`` (the core picks single or ensemble on dev), ``top1``, ``topk`` or ``optimized``.
        ensemble_k: members of an ensemble.
        temperature: sampling temperature of the paraphrasing LM.
        generator: another model to paraphrase with (default: the scored model).
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    name = "paraphrase"
    searches = frozenset({"template"})
    carries = frozenset({"verbalizer", "demos"})
    summary = "LPAQA: mined and LM-paraphrased templates, ranked on train; single or top-k / optimized ensemble"
    default_budget = 4000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_paraphrases": {"type": "int", "low": 2, "high": 10},
        "beam": {"type": "int", "low": 1, "high": 5},
        "score_examples": {"type": "int", "low": 16, "high": 64, "log": True},
        "temperature": {"type": "float", "low": 0.5, "high": 1.2},
    }

    sources: str = "manual,mine,paraphrase"
    templates: str | None = None
    corpus: str | None = None
    num_mined: int = 8
    num_paraphrases: int = hyper(6, low=1)
    beam: int = hyper(3, low=1)
    score_examples: int = hyper(32, low=1)
    select: Literal["auto", "top1", "topk", "optimized"] = "auto"
    ensemble_k: int = hyper(3, low=1)
    temperature: float = 0.8
    generator: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self._sources()) - {"manual", "mine", "paraphrase"}
        if unknown or not self._sources():
            raise AutopromptError(f"paraphrase: sources must be a comma list of manual, mine, paraphrase; "
                                  f"got {self.sources!r}")

    def _sample(self, ctx: SearchContext) -> list[Example]:
        """The train examples every template is scored on: the same draw all run, so scores compare."""
        return ctx.sample(ctx.train, self.score_examples, salt="score", fixed=True)

    @property
    def watched(self) -> int:
        """How many of the best templates by train are watched on dev (the beam and the ensemble's members)."""
        return max(self.beam, self.ensemble_k)

    def _sources(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]

    # ---- candidates -------------------------------------------------------------------------

    def valid(self, ctx: SearchContext, text: str) -> Template | None:
        """The template if its slots survived: the task's fields, one [P], [P] last on a causal LM."""
        try:
            template = Template(text)
            ctx.lm.check_template(template)  # e.g. a causal LM needs [P] last
        except AutopromptError:
            return None
        if set(template.fields) != set(ctx.task.fields) or template.num_triggers or template.num_soft:
            return None
        return template

    def seeds(self, ctx: SearchContext) -> list[str]:
        out = [starting_prompt(ctx).template.source] if "manual" in self._sources() else []
        out += [t.strip() for t in (self.templates or "").split("||") if t.strip()]
        if "mine" in self._sources():
            out += self.mine(ctx)
        return out

    def mine(self, ctx: SearchContext) -> list[str]:
        """Middle-word templates from the corpus, most frequent first (`mining.mine`)."""
        return mine(ctx, self.corpus, self.num_mined)

    def rewrite(self, ctx: SearchContext, template: Template, salt: str) -> list[str]:
        """Rewrites of ``template`` by the generator LM (sampled from the step's seed); charged by the core."""
        if ctx.ask(TextWriting).other_model(self.generator).kind == "masked":
            return refill(ctx, self.generator, template, self.num_paraphrases)
        return ask(ctx, self.generator, template, salt, self.num_paraphrases, self.temperature)

    # ---- the strategy -------------------------------------------------------------------------

    def _score(self, ctx: SearchContext, state: ParaphraseState, texts: list[str], also: int = 0) -> list[str]:
        """Score new valid templates on the train sample; returns those added to the pool.

        As many as the budget left pays for, counting the dev watch that follows (`_beam_on_dev`: up to
        `watched` of them, plus ``also`` listed ones), so that a step never runs out half-way and is lost.
        """
        fresh, seen = [], set(state["pool"])
        for text in texts:
            template = self.valid(ctx, text)
            if template is None:
                state["dropped"] += 1
            elif template.source not in seen:
                fresh.append(template)
                seen.add(template.source)
        if fresh:
            sample, watched = self._sample(ctx), self.watched + also
            affordable = len(fresh)
            while affordable > 1 and affordable * len(sample) + min(affordable, watched) * len(ctx.dev) \
                    > ctx.budget_left:
                affordable -= 1
            fresh = fresh[:affordable]  # what the budget pays for (at least one, or the step ends the search)
            prompts = ctx.calibrate([starting_prompt(ctx, t.source) for t in fresh], inputs=sample)
            for template, score in zip(fresh, ctx.objective_scores(prompts, sample), strict=True):
                state["pool"][template.source] = score
        return [t.source for t in fresh]

    def _beam_on_dev(self, ctx: SearchContext, state: ParaphraseState, also: tuple[str, ...] = ()) -> None:
        """Move the beam to the best on train and watch it (and ``also``) on dev (``best_dev``)."""
        ranked = sorted(state["pool"], key=lambda t: -state["pool"][t])
        state["beam"] = ranked[: self.beam]
        wanted = [*also, *ranked[: self.watched]]
        todo = [t for t in dict.fromkeys(wanted) if t in state["pool"] and t not in state["dev"]]
        sample = self._sample(ctx)
        prompts = ctx.calibrate([starting_prompt(ctx, t) for t in todo], inputs=sample)
        for template, result in zip(todo, ctx.evaluator.score_many(prompts, ctx.dev), strict=True):
            state["dev"][template] = result.score
        best = max(state["dev"], key=lambda t: state["dev"][t])
        state["best_dev"] = state["dev"][best]

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: every seed template (manual, listed, mined) on the scoring sample, the beam's and the
        # ensemble's on dev; a step: the beam's rewrites generated (a masked generator spends one per
        # word, about 8), at least one new template on the sample, and the beam on dev
        sample, watched = min(self.score_examples, train), self.watched
        sources = self._sources()
        seeds = ("manual" in sources) + len([t for t in (self.templates or "").split("||") if t.strip()]) \
            + (self.num_mined if "mine" in sources else 0)
        start = seeds * sample + min(seeds, watched + 1) * dev
        return start, self.beam * max(self.num_paraphrases, 8) + sample + watched * dev

    def start(self, ctx: SearchContext) -> ParaphraseState:
        state: ParaphraseState = {"pool": {}, "dev": {}, "beam": [], "dropped": 0, "round": 0}
        seeds = self.seeds(ctx)
        # the manual and listed templates always compete on dev: a search never reports worse
        listed = seeds[: 1 + len((self.templates or "").split("||"))]
        self._score(ctx, state, seeds, also=len(listed))
        if not state["pool"]:
            raise AutopromptError("paraphrase: no valid seed template; add manual to sources or give templates")
        self._beam_on_dev(ctx, state, also=tuple(t for t in listed if t in state["pool"]))
        return state

    def step(self, ctx: SearchContext, state: ParaphraseState) -> ParaphraseState:
        if "paraphrase" not in self._sources():
            return {**state, "done": True}
        generated = []
        for i, source in enumerate(state["beam"]):
            generated += self.rewrite(ctx, Template(source), salt=f"{state['round']}:{i}")
        added = self._score(ctx, state, generated)
        state["round"] += 1
        self._beam_on_dev(ctx, state)
        ctx.report({"generated": len(generated), "new": len(added), "dropped_total": state["dropped"],
                    "examples": added[:3], "beam": state["beam"]})
        if not added:
            state["done"] = True
        return state

    def candidates(self, ctx: SearchContext, state: ParaphraseState) -> list[AnyPrompt]:
        """The best templates by train objective, calibrated; an ensemble of them first unless ``top1``."""
        ranked = sorted(state["pool"], key=lambda t: -state["pool"][t])
        sample = self._sample(ctx)
        singles = ctx.calibrate([starting_prompt(ctx, t) for t in ranked[: self.watched]], inputs=sample)
        if self.select == "top1" or len(singles) == 1:
            return list(singles)
        members = tuple(singles[: self.ensemble_k])
        weights = (1.0,) * len(members) if self.select in ("auto", "topk") else tuple(self.learn_weights(ctx, members))
        ensemble = Ensemble(members, weights)
        return [ensemble, *singles] if self.select == "auto" else [ensemble]

    def best(self, ctx: SearchContext, state: ParaphraseState) -> AnyPrompt:
        """The strategy's own pick: the best template by train (``top1``/``auto``) or the ensemble."""
        found = self.candidates(ctx, state)
        return found[1] if self.select == "auto" and len(found) > 1 else found[0]

    def learn_weights(self, ctx: SearchContext, members: tuple[Prompt, ...]) -> list[float]:
        """Softmax weights maximising the train sample's gold log-likelihood of the ensemble."""
        sample = self._sample(ctx)
        stacked = torch.stack([r.logprobs for r in ctx.evaluator.score_many(list(members), sample)])  # [M, N, C]
        gold = torch.tensor([ex.label for ex in sample])
        theta = torch.zeros(len(members), requires_grad=True)
        opt = torch.optim.Adam([theta], lr=0.1)
        for _ in range(200):
            mixed = (theta.softmax(0)[:, None, None] * stacked).sum(0)                            # [N, C]
            loss = -mixed.log_softmax(-1)[torch.arange(len(gold)), gold].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return theta.detach().softmax(0).tolist()
