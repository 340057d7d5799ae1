"""``paraphrase``: mined and paraphrased templates, top-1 or ensembles (Jiang et al., 2020, LPAQA).

Candidate templates come from pluggable sources (``sources=manual,mine,paraphrase``):

* **manual** — the task's manual template and any listed in ``templates`` (``||``-separated);
* **mine** — middle words from a corpus (``corpus=FILE``, default the train inputs): for
  classification, the words just before a label word in the text (``{sentence} it was [P]``);
  for LAMA, the words between a training subject and its object in one sentence
  (``{subject} was born in [P]``); frequency-ranked;
* **paraphrase** — rewrites by the frozen LM itself (or ``generator=MODEL``): a causal LM is asked,
  through its chat template where it has one, to rewrite the template, sampled with the seed; a
  masked LM masks one template word at a time and refills it with its top predictions.

Slots survive every rewrite or the rewrite is dropped (and counted): a candidate has exactly the
task's fields and one ``[P]`` (last, on a causal LM). Each round paraphrases the current beam
again; every new candidate is scored on the same train sample as one batched evaluator job, and
the beam is watched on ``dev``. Candidates are ranked by the search's objective (calibrated
as the search is) on that train sample, and the core re-scores the best of them on dev against
the manual prompt (`autoprompt.search.selection`). ``select``: ``auto`` offers the core the top-k
equal-weight ensemble and the best single templates, so the ensemble is reported when it wins
on dev; ``top1`` (single templates only), ``topk`` (an equal-weight ensemble of the
``ensemble_k`` best) or ``optimized`` (the same members, softmax weights learned on the train
sample, as LPAQA) force one form.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from autoprompt import AnyPrompt, AutopromptError, Ensemble, Prompt, Template, load_model
from autoprompt.search import SearchContext, Searcher, hyper, starting_prompt

_ANSWER = "[ANSWER]"  # how [P] is shown to a paraphrasing LM


@dataclass
class Paraphrase(Searcher):
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

    name = "paraphrase"
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

    def _sample(self, ctx: SearchContext) -> list:
        """The train examples every template is scored on: the same draw all run, so scores compare."""
        return ctx.sample(ctx.train, self.score_examples, salt="score", fixed=True)

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
        """Middle-word templates from the corpus, most frequent first."""
        if self.corpus:
            if not Path(self.corpus).is_file():
                raise AutopromptError(f"paraphrase: corpus file {self.corpus} does not exist")
            lines = Path(self.corpus).read_text(errors="replace").splitlines()
        else:
            lines = [" ".join(ex.fields.values()) for ex in ctx.train]
        counts: Counter[str] = Counter()
        if ctx.task.fields == ("subject",):  # relation: the words between subject and object
            pairs = [(ex.fields["subject"], ctx.task.labels[ex.label]) for ex in ctx.train]
            for line in lines:
                for subject, obj in pairs:
                    i, j = line.find(subject), line.find(obj)
                    if 0 <= i < j:
                        middle = line[i + len(subject) : j].strip()
                        if middle and len(middle.split()) <= 6 and not re.search(r"[\[\]{}]", middle):
                            counts[middle] += 1
            head = "{subject}"
        else:  # classification: the words before a label word
            manual = ctx.task.default_prompt
            words = {w.lower() for ws in manual.verbalizer.words.values() for w in ws}
            for line in lines:
                tokens = line.split()
                for k, token in enumerate(tokens):
                    if token.lower().strip(".,!?") in words and k >= 1:
                        context = " ".join(tokens[max(0, k - 3) : k])
                        if not re.search(r"[\[\]{}]", context):
                            counts[context] += 1
            last = max(i for i, s in enumerate(manual.template.segments) if s.kind == "field")
            head = "".join(s.value if s.kind == "text" else s.space + "{" + s.value + "}"
                           for s in manual.template.segments[: last + 1]).replace("[", "[[")
        return [f"{head} {middle} [P]" for middle, _ in counts.most_common(self.num_mined)]

    def _generator(self, ctx: SearchContext):
        if self.generator is None:
            return ctx.lm
        if not hasattr(self, "_gen"):
            self._gen = load_model(self.generator)
        return self._gen

    def rewrite(self, ctx: SearchContext, template: Template, salt: str) -> list[str]:
        """Rewrites of ``template`` by the generator LM (sampled from the step's seed)."""
        gen = self._generator(ctx)
        return self._refill(gen, template) if gen.kind == "masked" else self._ask(ctx, gen, template, salt)

    def _ask(self, ctx: SearchContext, gen, template: Template, salt: str) -> list[str]:
        """Causal LM: rewrite the whole template, and each of its text pieces on its own.

        Small models rarely keep placeholders through a whole-template rewrite; a text piece
        ("It was", "Sentiment (positive or negative):") is rewritten between the untouched slots,
        so those rewrites keep their slots by construction.
        """
        shown = template.source.replace("[P]", _ANSWER)
        fields = ", ".join("{" + f + "}" for f in template.fields)
        whole = (f"Rewrite this prompt template in a different way. Keep {fields} and {_ANSWER} exactly "
                 f"as written, with {_ANSWER} at the end. Reply with the new template only.\n\n{shown}")
        out = [t.replace(_ANSWER, "[P]") for t in self._generate(ctx, gen, whole, salt)]
        pieces = [i for i, s in enumerate(template.segments) if s.kind == "text" and any(c.isalpha() for c in s.value)]
        for i in pieces:
            text = template.segments[i].value
            core = text.strip()
            request = ("Rewrite the phrase in other words, keeping its meaning. Reply with the new phrase only.\n\n"
                       f"Phrase: {core}")
            for new in self._generate(ctx, gen, request, f"{salt}:{i}"):
                new = new.splitlines()[0].strip().strip('"') if new.strip() else ""
                if new and new != core:
                    segments = list(template.segments)
                    segments[i] = type(segments[i])("text", text.replace(core, new))
                    out.append(Template.from_segments(segments).source)
        return out

    def _generate(self, ctx: SearchContext, gen, request: str, salt: str) -> list[str]:
        """``num_paraphrases`` sampled replies, through the chat template where there is one."""
        tok = gen.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = f"{request}\n\nAnswer:"
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=gen.device)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(ctx.rng().randrange(2**31) + sum(map(ord, salt)))  # the step's seed
            out = gen.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=self.temperature, max_new_tokens=40,
                                     num_return_sequences=self.num_paraphrases, pad_token_id=gen.pad_id)
        return [t.strip() for t in tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def _refill(self, gen, template: Template) -> list[str]:
        """Masked LM: mask one template word at a time, refill with the top whole-word predictions."""
        words = template.source.split(" ")
        plain = [i for i, w in enumerate(words) if w.isalpha()]
        predict = next(i for i, w in enumerate(words) if "[P]" in w)
        mask = gen.tokenizer.mask_token
        keep = gen.word_start_tokens()
        out = []
        for i in plain:
            masked = " ".join(mask if j == i else w for j, w in enumerate(words))
            text = masked.replace("[P]", mask)
            for field in template.fields:  # a neutral filler: the template's own words are what change
                text = text.replace("{" + field + "}", "something")
            ids = torch.tensor([gen.tokenizer(text)["input_ids"]], device=gen.device)
            with torch.inference_mode():
                logits = gen.model(input_ids=ids).logits[0]
            masks = (ids[0] == gen.tokenizer.mask_token_id).nonzero()[:, 0]
            at = masks[1] if predict < i else masks[0]  # the [P] mask may come first
            scores = logits[at].float().masked_fill(~keep.to(logits.device), -float("inf"))
            for tok in scores.topk(max(1, self.num_paraphrases // max(1, len(plain)) + 1)).indices.tolist():
                word = gen.tokenizer.convert_tokens_to_string([gen.tokenizer.convert_ids_to_tokens(tok)]).strip()
                out.append(" ".join(word if j == i else w for j, w in enumerate(words)))
        return out

    # ---- the strategy -------------------------------------------------------------------------

    def _score(self, ctx: SearchContext, state: dict[str, Any], texts: list[str]) -> list[str]:
        """Score new valid templates on the train sample; returns those added to the pool."""
        verbalizer = ctx.task.default_prompt.verbalizer
        fresh, seen = [], set(state["pool"])
        for text in texts:
            template = self.valid(ctx, text)
            if template is None:
                state["dropped"] += 1
            elif template.source not in seen:
                fresh.append(template)
                seen.add(template.source)
        if fresh:
            sample = self._sample(ctx)
            affordable = int(ctx.budget_left // len(sample))
            fresh = fresh[: max(1, affordable)]  # what the budget pays for (at least one, or stop)
            prompts = ctx.calibrate([Prompt(t, verbalizer) for t in fresh], inputs=sample)
            for template, score in zip(fresh, ctx.objective_scores(prompts, sample), strict=True):
                state["pool"][template.source] = score
        return [t.source for t in fresh]

    def _beam_on_dev(self, ctx: SearchContext, state: dict[str, Any], also: tuple[str, ...] = ()) -> None:
        """Move the beam to the best on train and watch it (and ``also``) on dev (``best_dev``)."""
        verbalizer = ctx.task.default_prompt.verbalizer
        ranked = sorted(state["pool"], key=lambda t: -state["pool"][t])
        state["beam"] = ranked[: self.beam]
        wanted = [*also, *ranked[: max(self.beam, self.ensemble_k)]]
        todo = [t for t in dict.fromkeys(wanted) if t in state["pool"] and t not in state["dev"]]
        sample = self._sample(ctx)
        prompts = ctx.calibrate([Prompt(t, verbalizer) for t in todo], inputs=sample)
        for template, result in zip(todo, ctx.evaluator.score_many(prompts, ctx.dev), strict=True):
            state["dev"][template] = result.score
        best = max(state["dev"], key=lambda t: state["dev"][t])
        state["best_dev"] = state["dev"][best]

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: every seed template (manual, listed, mined) on the scoring sample, the beam's and the
        # ensemble's on dev; a step: the beam's rewrites generated (a masked generator spends one per
        # word, about 8), at least one new template on the sample, and the beam on dev
        sample, watched = min(self.score_examples, train), max(self.beam, self.ensemble_k)
        sources = self._sources()
        seeds = ("manual" in sources) + len([t for t in (self.templates or "").split("||") if t.strip()]) \
            + (self.num_mined if "mine" in sources else 0)
        start = seeds * sample + min(seeds, watched + 1) * dev
        return start, self.beam * max(self.num_paraphrases, 8) + sample + watched * dev

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        state: dict[str, Any] = {"pool": {}, "dev": {}, "beam": [], "dropped": 0, "round": 0}
        seeds = self.seeds(ctx)
        self._score(ctx, state, seeds)
        if not state["pool"]:
            raise AutopromptError("paraphrase: no valid seed template; add manual to sources or give templates")
        # the manual and listed templates always compete on dev: a search never reports worse
        listed = tuple(t for t in seeds[: 1 + len((self.templates or "").split("||"))] if t in state["pool"])
        self._beam_on_dev(ctx, state, also=listed)
        return state

    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        state = {**state, "pool": dict(state["pool"]), "dev": dict(state["dev"])}
        if "paraphrase" not in self._sources():
            return {**state, "done": True}
        generated = []
        for i, source in enumerate(state["beam"]):
            template = Template(source)
            # generation's cost in example-forwards: one per sampled rewrite (causal), one per
            # masked word (masked)
            cost = sum(w.isalpha() for w in source.split(" ")) if self._generator(ctx).kind == "masked" \
                else self.num_paraphrases
            ctx.budget.require(forwards=cost)
            generated += self.rewrite(ctx, template, salt=f"{state['round']}:{i}")
            ctx.budget.charge(forwards=cost)
        added = self._score(ctx, state, generated)
        state["round"] += 1
        self._beam_on_dev(ctx, state)
        ctx.report({"generated": len(generated), "new": len(added), "dropped_total": state["dropped"],
                    "examples": added[:3], "beam": state["beam"]})
        if not added:
            state["done"] = True
        return state

    def candidates(self, ctx: SearchContext, state: dict[str, Any]) -> list[AnyPrompt]:
        """The best templates by train objective, calibrated; an ensemble of them first unless ``top1``."""
        verbalizer = ctx.task.default_prompt.verbalizer
        ranked = sorted(state["pool"], key=lambda t: -state["pool"][t])
        sample = self._sample(ctx)
        singles = ctx.calibrate([Prompt(t, verbalizer) for t in ranked[: max(self.ensemble_k, self.beam)]],
                                inputs=sample)
        if self.select == "top1" or len(singles) == 1:
            return singles
        members = tuple(singles[: self.ensemble_k])
        weights = (1.0,) * len(members) if self.select in ("auto", "topk") else tuple(self.learn_weights(ctx, members))
        ensemble = Ensemble(members, weights)
        return [ensemble, *singles] if self.select == "auto" else [ensemble]

    def best(self, ctx: SearchContext, state: dict[str, Any]) -> AnyPrompt:
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
