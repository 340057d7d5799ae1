"""``--strategy auto``: a pipeline chosen from what the task looks like.

The features, all read without labels except the class count: the number of classes, the
inputs' length in tokens, the manual prompt's class bias on the train inputs (the share of the
class it predicts most, uncalibrated), and whether one demonstration per class fits in the
model's context beside the longest input.

The rule (`choose_stages`) follows what each strategy is for. Label words are searched first
where the manual prompt's words are likely wrong for the model: more than two classes, or a
prompt that predicts one class for most inputs. Demonstrations come next wherever they fit (they
keep the label words and template the earlier stage chose), and then the decision rule
(`searchers/rule_choice.py`): with demonstrations in the prompt, reading the class by the noisy
channel or by hidden-state centroids beat the label words' probability on held-out splits
(`RULE_CANDIDATES`); the stage keeps ``direct`` unless its gate sees better. Where dev is small (fewer than
`CROSSFIT_BELOW_DEV` examples) the gate is cross-fitted, so that every labelled example is evidence.
``medium`` adds a trigger search on
top, ``heavy`` a template search before everything; ``soft=true`` trains a deep prefix instead of
showing demonstrations (a prefix cannot carry them, and its result is tied to this model: it
cannot move to another model as text).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import default_budget
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.tasks.base import TaskData

EFFORTS: tuple[str, ...] = ("light", "medium", "heavy")

#: total example-forwards per effort, sized for smollm2-135m on 2 CPU cores (other models: scaled by
#: their relative cost): ``light`` keeps a 16-shot SST-2 run, test scoring included, within 15 minutes
EFFORT_BUDGETS = {"light": 4000, "medium": 12000, "heavy": 24000}

#: a prompt predicting one class for this share of the train inputs is biased: its label words are searched
BIAS_THRESHOLD = 0.75

#: below this many dev examples the gate is cross-fitted (`PipelineSettings.crossfit`): every labelled
#: example becomes evidence. Chosen on held-out 16-shot splits no reported figure uses
#: (`benchmarks/compose.py --part heldout`, results/compose_heldout.json; accuracy on 500 other train rows):
#: SST-2 (dev 32) plain 0.708 / 0.750 — the gate on 32 dev examples passed neither — vs cross-fitted
#: 0.748 / 0.820; TREC (dev 96) plain 0.514 / 0.472 vs cross-fitted 0.498 / 0.458 (both gates passed:
#: with 96 dev examples the plain gate has the power, and its prompt saw all of train). Manual prompt:
#: SST-2 0.708 / 0.750, TREC 0.316 / 0.338.
CROSSFIT_BELOW_DEV = 64

#: the decision rules the ``rule`` stage after demonstrations tries (`searchers/rule_choice.py`; it cross-fits
#: them on train and the gate keeps direct unless another is reliably better). Chosen on the same held-out
#: splits (`benchmarks/rules.py --part heldout`, results/rules_heldout.json): the manual prompt with one
#: random train example per class in front, accuracy on 500 other train rows, uncalibrated / prior —
#: SST-2 split 1: direct 0.652 / 0.710, channel 0.692 / 0.740, centroid 0.686 / 0.690; split 2: direct
#: 0.680 / 0.736, channel 0.726 / 0.792, centroid 0.762 / 0.770; TREC split 1: direct 0.442 / 0.430,
#: channel 0.258 / 0.294, centroid 0.680 / 0.616. Each rule wins somewhere: all three compete.
RULE_CANDIDATES = "direct,channel,centroid"


@dataclass
class AutoPlan:
    """What ``auto`` chose, and from what."""

    stages: list[tuple[str, dict[str, Any]]]
    crossfit: bool
    total_budget: int
    budget_spent: int
    features: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = [{"strategy": s, "params": p} for s, p in self.stages]
        return out


def task_features(lm: ScoringModel, data: TaskData, budget: Budget) -> dict[str, Any]:
    """The features the rule reads (the bias costs one forward per train input, charged to ``budget``)."""
    task, train = data.task, data.train
    lengths = sorted(len(lm.tokenize(" ".join(ex.fields.values()))) for ex in train)
    preds = Evaluator(lm, task, budget=budget).score(task.default_prompt, train).preds.tolist()
    bias = max(preds.count(c) for c in set(preds)) / len(preds)
    demo_tokens = round(sum(lengths) / len(lengths) + 8) * len(task.labels)  # one per class, with its template words
    context = lm.context_length
    return {"classes": len(task.labels), "dev": len(data.dev),
            "mean_input_tokens": round(sum(lengths) / len(lengths), 1),
            "max_input_tokens": lengths[-1], "manual_bias": round(bias, 4),
            "demo_tokens": demo_tokens, "context": context,
            "demos_fit": context is None or demo_tokens + lengths[-1] + 32 <= context}


def choose_stages(features: dict[str, Any], effort: str, soft: bool) -> tuple[list[tuple[str, dict[str, Any]]],
                                                                               list[str]]:
    """The stages for these features (see the module docstring for why), and the reasons."""
    stages: list[tuple[str, dict[str, Any]]] = []
    reasons = []
    if effort == "heavy":
        stages.append(("paraphrase", {}))
        reasons.append("heavy: templates are searched first")
    if features["classes"] > 2 or features["manual_bias"] >= BIAS_THRESHOLD:
        stages.append(("verbalizer", {}))
        reasons.append(f"label words: {features['classes']} classes, the manual prompt predicts its most frequent "
                       f"class for {features['manual_bias']:.0%} of train inputs")
    if soft:
        stages.append(("ptuning", {"mode": "prefix"}))
        reasons.append("soft=true: a deep prefix (tied to this model; it cannot carry demonstrations)")
    elif features["demos_fit"]:
        stages.append(("demos", {"method": "search"}))
        reasons.append(f"demonstrations: one per class ({features['demo_tokens']} tokens) fits the context")
        stages.append(("rule", {"rules": RULE_CANDIDATES}))
        reasons.append("decision rule: the noisy channel and hidden-state centroids compete with the label words' "
                       "probability on the prompt with demonstrations")
    if effort in ("medium", "heavy") and not soft:
        stages.append(("gradient", {}))
        reasons.append(f"{effort}: trigger tokens on top")
    if not stages:
        stages.append(("verbalizer", {}))
        reasons.append("nothing else applies: label words")
    return stages, reasons


def plan_auto(lm: ScoringModel, data: TaskData, effort: str, soft: bool, model: str) -> AutoPlan:
    """The pipeline ``auto`` runs on ``data`` with ``effort``."""
    budget = Budget(None)
    features = task_features(lm, data, budget)
    stages, reasons = choose_stages(features, effort, soft)
    crossfit = features["dev"] < CROSSFIT_BELOW_DEV
    reasons.append(f"{'a cross-fitted gate' if crossfit else 'the gate on dev'}: {features['dev']} dev examples")
    return AutoPlan(stages, crossfit, default_budget(EFFORT_BUDGETS[effort], model), budget.used, features, reasons)
