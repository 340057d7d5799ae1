"""The strategy contract: `Searcher` (what a strategy implements), `SearchState`, `StrategyModel` and `SearchContext`.

A strategy is a dataclass whose fields are its hyper-parameters, generic over the state it owns::

    class RandomState(SearchState):
        pool: dict[str, Any]

    @dataclass
    class Random(Searcher[RandomState]):
        name = "random"; summary = "random trigger tokens"; default_budget = 2000
        num_candidates: int = 8

        def start(self, ctx) -> RandomState: ...                     # the initial state
        def step(self, ctx, state: RandomState) -> RandomState: ...  # one step: returns the new state
        def best(self, ctx, state: RandomState) -> Prompt: ...       # the prompt to report

The rules of the contract, all of them:

1. Hyper-parameters are the dataclass's fields, stored as given; `__post_init__` validates (``hyper(low=)``
   for lower bounds) and never rewrites them. The docstring's ``Args:`` are their help text.
2. The state is a ``TypedDict`` deriving from `SearchState`, holding JSON values and tensors only (it is
   checkpointed after every step). The core hands `step` a deep copy, so a step that fails half-way
   leaves the run's state as it was; return a new state, do not rely on mutating the one given.
3. `start` scores nothing the budget does not see; `costs` states what the start and one step cost
   (their sum is the minimum budget `run_search` accepts).
4. Randomness comes from ``ctx.rng(step)`` / ``ctx.sample``: a resumed run repeats the same draws.
5. Model work goes through the context's metered operations (``ctx.evaluator``, ``ctx.trigger_gradient``,
   ``ctx.prefix_from_text``, ...); ``ctx.lm`` is a `StrategyModel`: tokenizer, vocabulary and
   embeddings, read-only, nothing that runs the model. Writing a weight fails the run (checksum).
6. A strategy sees ``ctx.train`` and ``ctx.dev``, never test; `fitted` says which train examples it
   fitted on (the rest join dev in the final selection).
7. `candidates` and `best` may be called on the start state (no step taken) and must answer there.
8. Candidates are read by the search's rule and calibration: score them through ``ctx.calibrate``
   (the core re-scores the top `final_candidates` on fresh data and gates them against the start).
9. A warm start (``ctx.start``) keeps every part the strategy does not `searches`; `carries` names the
   parts it can keep, and a start with any other part is refused before the search begins.
10. A strategy is registered by the ``autoprompt.searchers`` entry-point group or `register` with an
    importable ``"module:Class"`` spec (which also reaches spawned workers of ``tune`` and ``suite``).

The run loop (`autoprompt.search.loop.run_search`) owns everything that must be fair and shared:
the frozen model, the splits (a strategy sees ``train`` and ``dev``, never ``test``), the budget,
checkpoints after every step, the trace, progress events, the selection protocol and the final
scores on ``dev`` and ``test`` next to the manual baseline.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypedDict, TypeVar, cast

import torch
from torch import Tensor

from autoprompt import events
from autoprompt.backends import Encoded, Kind, ScoringModel, WordTable, full_model, gradient_model
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.prompts import CALIBRATION_METHODS, DIRECT, RULES, AnyPrompt, Demonstration, Prompt, Rule, Template
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator, P
from autoprompt.search.selection import Objective, objective_score
from autoprompt.tasks.base import Example, Task


class SearchState(TypedDict, total=False):
    """What the run loop reads from a strategy's state; a strategy's own state derives from it.

    The whole state is checkpointed after every step, so it holds JSON values and tensors only.
    """

    done: bool        # stop before the budget ends (the search has converged or run out of ideas)
    best_dev: float   # the strategy's best score so far (the progress display and tuner pruning read it)


#: the state type a strategy owns (a `SearchState` with its own keys)
S = TypeVar("S", bound=SearchState)


def hyper(default: Any, *, low: float | None = None) -> Any:
    """A hyper-parameter field with its lowest valid value, checked by `Searcher` for every strategy
    (one rule instead of a copy of "must be at least 1" per strategy); ``None`` always passes.

    Its help text is the strategy docstring's ``Args:`` entry (`autoprompt.search.param_docs`).
    """
    return dataclasses.field(default=default, metadata={"low": low})


@dataclass
class Searcher(ABC, Generic[S]):
    """Base class of strategies: subclasses are dataclasses whose fields are hyper-parameters.

    Four fields every strategy shares belong to the core's selection protocol
    (`autoprompt.search.selection`): how prompts are calibrated, the objective candidates are
    compared on, and the gate that keeps the manual prompt unless a found one is reliably better.

    Args:
        calibration: ``none``, ``contextual`` (content-free inputs) or ``prior`` (mean class
            distribution over the train inputs); the found prompt carries it.
        objective: ``margin`` (mean calibrated gold-class log-prob margin over the best other class),
            ``loglik`` (mean calibrated gold-class log-probability, classes normalised) or ``accuracy``.
        min_gain: the reported prompt must beat the manual one on the selection data by more
            than this many paired standard errors of the objective (0: any gain).
        gate: False reports the best candidate on the selection data even where the manual prompt
            is better (for studying what a search finds; its result says it was not gated).
        rule: the decision rule every candidate is read by (`autoprompt.prompts.Rule`): ``direct``
            (label-word probability), ``channel`` (the input's likelihood after each label; causal LMs)
            or ``centroid`` (nearest class centroid of the hidden state at ``[P]``, fitted on the
            examples candidates are calibrated on); None keeps the start prompt's rule (the manual
            prompt's is ``direct``). The gate compares against the start as it is.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: example-forwards that keep a 16-shot SST-2 search under 15 minutes on 2 CPU cores
    default_budget: ClassVar[int] = 3000
    #: what ``autoprompt tune`` searches by default: ``{param: {"type": "int"|"float"|"categorical",
    #: "low", "high", "log", "choices"}}``
    search_space: ClassVar[dict[str, dict[str, Any]]] = {}
    #: whether the result passes the gate (False only for ``manual``: it reports what it was given)
    gated: ClassVar[bool] = True
    #: how many of `candidates` the core re-scores at the end
    final_candidates: ClassVar[int] = 3
    #: the task kinds the strategy searches (`Task.kind`): label-word strategies need classes
    task_kinds: ClassVar[tuple[str, ...]] = ("classification",)
    #: whether it fits on train examples of every class (label-word statistics): a train split
    #: missing a class is then refused before any work
    needs_every_class: ClassVar[bool] = False
    #: the parts of the prompt it searches (`autoprompt.search.parts.PARTS`): what it may change
    searches: ClassVar[frozenset[str]] = frozenset()
    #: the parts of a warm start (``ctx.start``) it keeps unchanged; a start holding any other part
    #: it does not search is refused before the search begins
    carries: ClassVar[frozenset[str]] = frozenset({"template", "verbalizer"})

    calibration: Literal["none", "contextual", "prior"] = "prior"
    objective: Literal["margin", "loglik", "accuracy"] = "margin"
    min_gain: float = hyper(1.0, low=0)
    gate: bool = True
    rule: Literal["direct", "channel", "centroid"] | None = None

    @abstractmethod
    def start(self, ctx: SearchContext) -> S:
        """The initial state (JSON values and tensors: it is checkpointed after every step)."""

    @abstractmethod
    def step(self, ctx: SearchContext, state: S) -> S:
        """One search step; return the new state. Set ``state["done"] = True`` to stop early."""

    @abstractmethod
    def best(self, ctx: SearchContext, state: S) -> AnyPrompt:
        """The strategy's own pick (the first of `candidates` unless it says otherwise)."""

    def candidates(self, ctx: SearchContext, state: S) -> list[AnyPrompt]:
        """The prompts the core re-scores and gates at the end, most promising first."""
        return [self.best(ctx, state)]

    def fitted(self, ctx: SearchContext, state: S) -> Sequence[Example]:
        """The train examples the search fitted on (the rest of train joins dev in the final selection)."""
        return ctx.train

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        """Example-forwards of the start and of one step on splits of these sizes (an upper estimate).

        ``train`` is the train examples; ``dev`` what one scoring of dev is charged
        (`autoprompt.scoring.generation.scoring_forwards`: its examples, plus their references on a
        generation task). Their sum is the minimum useful budget: below it a search cannot take a step, so
        `run_search` refuses it. Default: the start scores one prompt on dev and estimates its
        calibration on train; a step scores one prompt on train.
        """
        return self._calibration_cost(train) + dev, train

    def minimum_budget(self, train: int, dev: int) -> int:
        """The start and one step (`costs`)."""
        return sum(self.costs(train, dev))

    def _calibration_cost(self, inputs: int) -> int:
        """Example-forwards `SearchContext.calibrate` spends on one prompt and ``inputs`` inputs that
        are not scored anyway (``prior`` on the examples a prompt is then scored on is a cache hit)."""
        fit = inputs if self.rule == "centroid" else 0  # the centroids' forwards on labelled inputs
        return {"none": 0, "contextual": 3, "prior": inputs}[self.calibration] + fit

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def details(self, ctx: SearchContext, state: S) -> dict[str, Any]:
        """Extra facts for ``result.json`` (e.g. trainable parameters, a readout); none by default."""
        return {}

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise AutopromptError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, not "
                                  f"{self.calibration!r}")
        if self.rule is not None and self.rule not in RULES:
            raise AutopromptError(f"rule must be one of {', '.join(RULES)}, not {self.rule!r}", params=("rule",))
        for f in dataclasses.fields(self):
            low, value = f.metadata.get("low"), getattr(self, f.name)
            if low is not None and value is not None and not value >= low:  # `not >=`: NaN fails too
                raise AutopromptError(f"{self.name}: `{f.name}` must be at least {low:g}, got {value}",
                                      params=(f.name,))


class StrategyModel(Protocol):
    """The frozen model as a strategy sees it (``ctx.lm``): exactly what a strategy may call.

    Encoding, the tokenizer, vocabulary filters and embeddings, read-only; nothing here runs the model
    (its compute goes through the search context's metered operations, so the budget sees all of it).
    The embedding matrices share the frozen weights' storage: writing them fails the run (the core
    checks the weights' checksum after every search).
    """

    @property
    def kind(self) -> Kind: ...
    @property
    def name(self) -> str: ...
    @property
    def tokenizer(self) -> Any: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def context_length(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def compute_dtype(self) -> str: ...  # what the search's steps compute in (``fp32`` or ``bf16``)
    @property
    def embed_scale(self) -> float: ...
    def tokenize(self, text: str) -> tuple[int, ...]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded: ...
    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable: ...
    def check_template(self, template: Template) -> None: ...
    def check_triggers(self, prompt: Prompt) -> None: ...
    def check_prefix(self) -> None: ...
    def prefix_shape(self, length: int) -> tuple[int, ...]: ...
    def embedding_matrix(self) -> Tensor: ...
    def input_embeddings(self, ids: Tensor) -> Tensor: ...
    def output_embedding_matrix(self) -> Tensor: ...
    def num_parameters(self) -> int: ...
    def word_start_tokens(self) -> Tensor: ...
    def stable_word_tokens(self) -> Tensor: ...


class ModelView:
    """`StrategyModel` over a backend: each member is delegated by name, nothing else is reachable (not
    the ``transformers`` module, not an operation that runs it), and nothing can be set."""

    _shown = frozenset(name for name in dir(StrategyModel) if not name.startswith("_"))

    def __init__(self, lm: ScoringModel) -> None:
        object.__setattr__(self, "_lm", lm)

    @staticmethod
    def of(lm: ScoringModel) -> StrategyModel:
        """``lm`` as strategies see it."""
        return cast(StrategyModel, ModelView(lm))

    def __getattr__(self, name: str) -> Any:
        if name not in ModelView._shown:
            raise AttributeError(f"strategies do not call the model's {name!r}: use the search context's "
                                 "metered operations (ctx.evaluator, ctx.trigger_gradient, ...)")
        value = getattr(self._lm, name)
        return (lambda *a, **k: value(*a, **k).detach()) if name.endswith("embedding_matrix") else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the model is read-only to strategies")


@dataclass
class SearchContext:
    """Everything a strategy may use. There is no ``test`` here, by design.

    Attributes:
        lm: the frozen model, as a read-only `ModelView` (its compute goes through the methods here).
        task: labels, metric and the default manual prompt.
        train: examples to search on.
        dev: examples to select on.
        evaluator: the shared scorer; it charges ``budget``.
        budget: example-forwards (and backwards) left.
        seed: the search seed.
        report: call with a dict to add fields to the current step's trace line.
        warn: call with a message for the user (shown, and kept in the trace and the result).
        step_index: the step being taken (the run loop sets it).
        calibration: how prompts are calibrated in this search (`calibrate` applies it).
        objective: what candidates are compared on (`objective_scores`).
        warm_start: a prompt to build on instead of the task's manual prompt (`start`).
        rule: the decision rule `calibrate` gives every prompt (fitted on the same inputs).
    """

    lm: StrategyModel
    task: Task
    train: list[Example]
    dev: list[Example]
    evaluator: Evaluator
    budget: Budget
    seed: int
    report: Callable[[dict[str, Any]], None] = lambda info: None
    warn: Callable[[str], None] = events.warn
    step_index: int = 0
    calibration: str = "none"
    objective: Objective = "margin"
    warm_start: Prompt | None = None
    rule: Rule = DIRECT

    def __post_init__(self) -> None:
        # the backend itself stays private: a strategy reaches its compute only through the metered methods
        self._backend: ScoringModel = self.lm._lm if isinstance(self.lm, ModelView) else cast(ScoringModel, self.lm)
        self.lm = ModelView.of(self._backend)

    @property
    def start(self) -> Prompt:
        """The prompt the search builds on: the warm start if one was given, else the task's manual
        prompt. A strategy changes the parts it `Searcher.searches` and keeps the others."""
        return self.warm_start if self.warm_start is not None else self.task.default_prompt

    def calibrate(self, prompts: Sequence[P], inputs: Sequence[Example] | None = None) -> list[P]:
        """The prompts read by this search's decision rule, with its calibration estimated and attached
        (charged to the budget).

        ``centroid`` fits its class centroids on ``inputs`` (default: all train examples; labels used);
        ``prior`` estimates the class prior on the same inputs (labels unused).
        """
        inputs = inputs if inputs is not None else self.train
        return self.evaluator.calibrate(self.evaluator.fit_rule(prompts, self.rule, inputs), self.calibration, inputs)

    def objective_scores(self, prompts: Sequence[AnyPrompt], examples: Sequence[Example]) -> list[float]:
        """The selection objective of each prompt on ``examples``, scored as one batched job."""
        return [objective_score(r, self.objective) for r in self.evaluator.score_many(prompts, examples)]

    @property
    def budget_left(self) -> float:
        """Example-forwards the budget still pays for (``inf`` without a limit)."""
        return self.budget.remaining

    def rng(self, step: int | None = None) -> random.Random:
        """A generator seeded by (seed, step): the same draws after a resume."""
        step = self.step_index if step is None else step
        return random.Random(f"{self.seed}:{step}")

    def sample(self, examples: Sequence[Example], k: int, salt: str = "", fixed: bool = False) -> list[Example]:
        """``k`` examples drawn without replacement (all of them if ``k`` >= their number).

        A new draw each step, or with ``fixed`` the same draw in every step of the run.
        """
        if k >= len(examples):
            return list(examples)
        step = "fixed" if fixed else self.step_index
        return random.Random(f"{self.seed}:{step}:{salt}").sample(list(examples), k)

    # ---- metered model operations: each pays for itself before it runs ---------------------------

    def trigger_gradient(self, prompt: Prompt, examples: Sequence[Example]) -> tuple[Tensor, float]:
        """Gradient ``[T, H]`` of the mean gold-label loss w.r.t. the trigger embeddings, and the loss
        (`LanguageModel.trigger_gradient`); one backward per example."""
        lm = self._backend
        grads = gradient_model(lm, "compute trigger gradients")
        with self.budget.paying(backwards=len(examples)):
            return grads.trigger_gradient([lm.encode(prompt, ex) for ex in examples],
                                          lm.word_table(prompt, self.task.labels), [ex.label for ex in examples])

    def trigger_nll(self, encoded: Sequence[Encoded]) -> Tensor:
        """``[B]`` fluency of each row's triggers (`LanguageModel.trigger_nll`), at the backend's cost."""
        lm = gradient_model(self._backend, "score the triggers' fluency")
        with self.budget.paying(forwards=lm.trigger_nll_cost(encoded)):
            return lm.trigger_nll(encoded)

    def slot_features(self, encoded: Sequence[Encoded], batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """``(hidden [N, H], vocabulary log-probs [N, V])`` at the prediction slot, on the CPU
        (`LanguageModel.slot_features`); one forward per example."""
        lm = gradient_model(self._backend, "read hidden states")
        hidden, logprobs = [], []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            with self.budget.paying(forwards=len(chunk)):
                h, logp = lm.slot_features(chunk)
            hidden.append(h.cpu())
            logprobs.append(logp.cpu())
        return torch.cat(hidden), torch.cat(logprobs)

    def word_logprobs(self, encoded: Sequence[Encoded], words: WordTable, batch_size: int = 32) -> Tensor:
        """``[N, C]`` log-probs of ``words`` (``C`` classes of words) at the slot, on the CPU; one
        forward per example for the whole table."""
        with self.budget.paying(forwards=len(encoded)):
            return torch.cat([self._backend.label_logprobs(encoded[b : b + batch_size], words).logprobs.cpu()
                              for b in range(0, len(encoded), batch_size)])

    def soft_logprobs(self, encoded: Sequence[Encoded], words: WordTable, soft: SoftPrompt,
                      tasks: Sequence[str] = ()) -> Tensor:
        """Class log-probs ``[B, C]`` that keep the graph to ``soft``'s tensors, for one training step
        (`LanguageModel.soft_logprobs`); one forward and one backward per example.

        A soft prompt with per-task parts scores each row with its member's part: ``tasks`` names
        each row's member task (`Example.task`).
        """
        lm = gradient_model(self._backend, "train soft prompts")
        with self.budget.paying(forwards=len(encoded), backwards=len(encoded)):
            if not soft.tasks:
                return lm.soft_logprobs(encoded, words, soft)
            if len(tasks) != len(encoded):
                raise AutopromptError("a soft prompt with per-task parts needs each row's member task (`tasks`)")
            order: list[int] = []
            parts = []
            for name in dict.fromkeys(tasks):
                rows = [i for i, t in enumerate(tasks) if t == name]
                parts.append(lm.soft_logprobs([encoded[i] for i in rows], words, soft.for_task(name)))
                order += rows
            return torch.cat(parts)[torch.tensor(order, device=parts[0].device).argsort()]   # [B, C] in row order

    def target_logprobs(self, encoded: Sequence[Encoded], targets: Sequence[Sequence[Sequence[int]]],
                        soft: SoftPrompt) -> list[Tensor]:
        """Per row, ``[R]`` summed log-probs of its reference token ids after its prompt, keeping the
        graph to ``soft`` (a generation task's training step); one forward and one backward per reference."""
        refs = sum(len(t) for t in targets)
        if self.evaluator.generation is None:
            raise AutopromptError(f"task {self.task.name} has no reference texts; target_logprobs is for generation")
        with self.budget.paying(forwards=refs, backwards=refs):
            return self.evaluator.generation.training_logprobs(encoded, targets, soft)

    def prefix_from_text(self, ids: Sequence[int]) -> Tensor:
        """The keys and values ``[L, 2, K, P, D]`` the model computes for token ``ids`` (a deep prefix's
        initialisation, `CausalLM.prefix_from_text`); one example-forward."""
        make = getattr(self._backend, "prefix_from_text", None)
        if make is None:
            raise AutopromptError(f"{self._backend.name} ({self._backend.kind} LM) cannot compute a key/value prefix: "
                                  "a deep prefix needs a causal LM")
        with self.budget.paying(forwards=1):
            return cast(Tensor, make(ids))

    def references(self, prompt: Prompt, example: Example) -> list[tuple[int, ...]]:
        """A generation example's reference token ids as scored after ``prompt`` (EOS last)."""
        if self.evaluator.generation is None:
            raise AutopromptError(f"task {self.task.name} has no reference texts")
        return self.evaluator.generation.references(prompt, example)

    def other_model(self, name: str | None) -> StrategyModel:
        """``lm`` (``None``) or another frozen model by name, loaded once per process (a paraphraser),
        read-only like ``lm``; its compute goes through `generate` and `fill_masks`."""
        return ModelView.of(self._model(name))

    def _model(self, name: str | None) -> ScoringModel:
        if name is None:
            return self._backend
        if name not in _other_models:
            _other_models[name] = load_model(name)
        return _other_models[name]

    def generate(self, model: str | None, requests: Sequence[tuple[str, int]], n: int, temperature: float,
                 max_new_tokens: int = 40) -> list[list[str]]:
        """``n`` sampled replies to each ``(request, seed)`` from the causal model ``model`` (a name for
        `other_model`; ``None``: ``lm``).

        Charged ``n`` example-forwards per call, the unit paraphrase rounds have always been
        budgeted in (one set of rewrites of one template, whatever the number of requests).
        """
        gen = full_model(self._model(model), "generate text")
        with self.budget.paying(forwards=n):
            return [gen.reply_samples(text, n, temperature, max_new_tokens, seed) for text, seed in requests]

    def fill_masks(self, model: str | None, jobs: Sequence[tuple[str, int]], k: int) -> list[list[str]]:
        """The ``k`` top whole words at mask ``which`` of each ``(text, which)``, from the masked model
        ``model`` (a name for `other_model`; ``None``: ``lm``); one example-forward per job."""
        filler = full_model(self._model(model), "fill masks")
        with self.budget.paying(forwards=len(jobs)):
            return [filler.fill_mask(text, which, k) for text, which in jobs]


_other_models: dict[str, ScoringModel] = {}  # models strategies use besides the scored one, by name
