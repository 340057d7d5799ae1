"""Search framework: the strategy contract, its registry, the run loop and the selection protocol.

    base.py       Searcher (what a strategy implements, the contract's rules), SearchState
    context.py    SearchContext (what a strategy sees)
    model_view.py StrategyModel (its read-only view of the model, ``ctx.lm``), ModelView
    capabilities.py  each strategy family's metered model operations (`SearchContext.ask`)
    registry.py   strategies by name: entry points and in-process `register`; parameter parsing
    toolkit.py    what strategies call: the starting prompt, trigger slots, a pool of scored trigger sets
    selection.py  the shared protocol: objective, gate, paired-bootstrap deltas
    runs.py       SearchSpec and the run folder (spec, trace, checkpoints, prompt, result)
    loop.py       run_search: start or resume, step under the budget, checkpoint
    finish.py     the gate, the held-out scores and result.json
    parts.py      the parts of a prompt a strategy searches or keeps; what a warm start may hold
    pipeline.py   stages run in order, each from the previous stage's prompt; one gate on dev at the end
    auto.py       `auto`: the pipeline chosen from the task's features
    estimate.py   the minimum useful budget and a time estimate
"""

from autoprompt.search.base import Searcher, SearchState, hyper
from autoprompt.search.capabilities import Capability, SlotReadout, SoftTraining, TextWriting, TriggerGradients
from autoprompt.search.context import SearchContext
from autoprompt.search.estimate import check_budget, estimate
from autoprompt.search.loop import limit_test, run_search
from autoprompt.search.model_view import StrategyModel
from autoprompt.search.parts import PARTS, prompt_parts
from autoprompt.search.pipeline import estimate_pipeline, is_pipeline, plan_pipeline, run_pipeline
from autoprompt.search.registry import (
    ENTRY_POINT_GROUP,
    available,
    create,
    describe_params,
    describe_strategy,
    get_strategy,
    param_docs,
    param_types,
    parse_params,
    register,
    unregister,
    variant,
)
from autoprompt.search.runs import RunDir, SearchSpec, find_run, finished_result
from autoprompt.search.toolkit import TriggerSearch, TriggerState, keep_best, one_token, starting_prompt, with_triggers

__all__ = [
    "ENTRY_POINT_GROUP",
    "PARTS",
    "Capability",
    "RunDir",
    "SearchContext",
    "SearchSpec",
    "SearchState",
    "Searcher",
    "SlotReadout",
    "SoftTraining",
    "StrategyModel",
    "TextWriting",
    "TriggerGradients",
    "TriggerSearch",
    "TriggerState",
    "available",
    "check_budget",
    "create",
    "describe_params",
    "describe_strategy",
    "estimate",
    "estimate_pipeline",
    "find_run",
    "finished_result",
    "get_strategy",
    "hyper",
    "is_pipeline",
    "keep_best",
    "limit_test",
    "one_token",
    "param_docs",
    "param_types",
    "parse_params",
    "plan_pipeline",
    "prompt_parts",
    "register",
    "run_pipeline",
    "run_search",
    "starting_prompt",
    "unregister",
    "variant",
    "with_triggers",
]
