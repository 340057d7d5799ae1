"""autoprompt: automatic prompt search over frozen language models.

The public API a strategy or a user needs::

    from autoprompt import load_task, load_model, Evaluator, Prompt
    data = load_task("sst2", shots=16, data_seed=13)
    lm = load_model("smollm2-135m")
    result = Evaluator(lm, data.task).score(data.task.default_prompt, data.dev)
"""

from autoprompt.backends import CausalLM, Encoded, FrozenLM, LanguageModel, MaskedLM
from autoprompt.backends.aliases import DEFAULT_MODEL
from autoprompt.backends.provision import provision
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError, BudgetExhausted
from autoprompt.prompts import (
    RULES,
    AnyPrompt,
    Calibration,
    Demonstration,
    Demonstrations,
    Ensemble,
    Prompt,
    Rule,
    Segment,
    Template,
    Verbalizer,
    load_prompt,
    prompt_from_json,
    save_prompt,
)
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.scores import EvalResult
from autoprompt.tasks import Example, Task, TaskData, custom_task, load_task

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "RULES",
    "AnyPrompt",
    "AutopromptError",
    "Budget",
    "BudgetExhausted",
    "Calibration",
    "CausalLM",
    "Demonstration",
    "Demonstrations",
    "Encoded",
    "Ensemble",
    "EvalResult",
    "Evaluator",
    "Example",
    "FrozenLM",
    "LanguageModel",
    "MaskedLM",
    "Prompt",
    "Rule",
    "Segment",
    "SoftPrompt",
    "Task",
    "TaskData",
    "Template",
    "Verbalizer",
    "custom_task",
    "load_model",
    "load_prompt",
    "load_task",
    "prompt_from_json",
    "provision",
    "save_prompt",
]
