"""The strategy contract: `Searcher` (what a strategy implements) and `SearchState` (what its state holds);
what it sees is `SearchContext` (`autoprompt.search.context`), its read-only model `StrategyModel`
(`autoprompt.search.model_view`) and its family's capability objects (`autoprompt.search.capabilities`).

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
5. Model work goes through metered operations: ``ctx.evaluator`` (shared scoring) and the family's
   capability object, ``ctx.ask(TriggerGradients)``, ``ctx.ask(SoftTraining)``, ... (`capabilities`; a
   new family subclasses `Capability`, whose every method pays before it runs); ``ctx.lm`` is a
   `StrategyModel`: tokenizer, vocabulary and embeddings, read-only, nothing that runs the model.
   Writing a weight fails the run (checksum).
6. A strategy sees ``ctx.train`` and ``ctx.dev``, never test; `fitted` says which train examples it
   fitted on (the rest join dev in the final selection).
7. `candidates` and `best` may be called on the start state (no step taken) and must answer there.
8. Candidates are read by the search's rule and calibration. The core fits both to what `candidates`
   returns (on all of train) before re-scoring the top `final_candidates` on fresh data and gating them
   against the start; a strategy that ranks on calibrated scores inside its steps calls ``ctx.calibrate``
   itself and says so (``calibrates = True``), and the core leaves its candidates as they are.
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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypedDict, TypeVar

from autoprompt.errors import AutopromptError
from autoprompt.prompts import CALIBRATION_METHODS, RULES, AnyPrompt
from autoprompt.tasks.base import Example

if TYPE_CHECKING:  # annotations only: the context imports the evaluator and the model store
    from autoprompt.search.context import SearchContext


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
    #: whether the strategy reads its candidates by the search's rule and calibration itself (it ranks on
    #: calibrated scores inside its steps, fitted on inputs of its choosing); if not, the core does it for
    #: what `candidates` returns, fitted on all of train, before the gate
    calibrates: ClassVar[bool] = False
    #: the task kinds the strategy searches (`Task.kind`): label-word strategies need classes
    task_kinds: ClassVar[tuple[str, ...]] = ("classification", "ranking")
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
