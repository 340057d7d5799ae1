"""The shared selection protocol: what a search may report, decided by the core for every strategy.

On 16 shots a dev set holds 32 examples: one example is 3 points of accuracy, and the best of many
candidates looks better than it is. So:

* candidates are compared on a **smooth objective**, the mean log-prob margin of the gold class
  over the best other class (calibrated when the prompt is), not on 0/1 accuracy alone;
* the manual prompt always competes, and a **gate** reports it unless the best candidate beats it
  on the selection data by more than ``min_gain`` paired standard errors of that objective —
  a search never hands back a prompt it has no evidence for;
* every result carries the dev and test **deltas** against the manual prompt with 95%
  paired-bootstrap intervals, so a user sees at once how far dev and test disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Prompt
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.scores import EvalResult
from autoprompt.tasks.base import Example
from autoprompt.tasks.kinds import kind_of_metric

Objective = Literal["margin", "loglik", "accuracy"]
OBJECTIVES: tuple[str, ...] = ("margin", "loglik", "accuracy")


def margins(logprobs: Tensor, labels: Tensor) -> Tensor:
    """``[..., N]`` gold-class log-prob minus the best other class's (positive: correct, with a margin),
    for ``[..., N, C]`` scores and ``[N]`` labels.

    Invariant to how each row is normalised, so raw and calibrated scores compare alike.
    """
    return per_example(logprobs, labels, "margin")


def per_example(logprobs: Tensor, labels: Tensor, objective: Objective = "margin") -> Tensor:
    """``[..., N]`` values of the objective for ``[..., N, C]`` class scores and ``[N]`` gold labels.

    ``margin``: gold-class log-prob minus the best other class's; ``loglik``: the gold class's
    log-probability with the classes normalised (a proper scoring rule: unlike the margin, a prompt
    cannot gain by being confidently wrong more often); ``accuracy``: 1/0 for correct/wrong (ties go
    to the lower class index, as the evaluator's argmax does).
    """
    gold_index = labels.expand(logprobs.shape[:-1])[..., None]                   # [..., N, 1]
    if objective == "margin":
        gold = logprobs.gather(-1, gold_index)[..., 0]
        if logprobs.shape[-1] == 1:
            return gold - gold
        return gold - logprobs.scatter(-1, gold_index, -math.inf).max(-1).values
    if objective == "loglik":
        return logprobs.log_softmax(-1).gather(-1, gold_index)[..., 0]
    if objective == "accuracy":
        return (logprobs.argmax(-1) == labels).float()
    raise AutopromptError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")


def objective_values(result: EvalResult, objective: Objective = "margin") -> Tensor:
    """``[N]`` per-example values of the objective on one prompt's scores (`per_example`).

    On a generation task: ``loglik`` is each input's per-token reference log-likelihood; ``margin``
    and ``accuracy`` compare the outputs' smoothed sentence BLEU (there are no classes).
    """
    if result.sentence_scores is not None:
        return result.logprobs[:, 0] if objective == "loglik" else result.sentence_scores
    return per_example(result.logprobs, result.labels, objective)


def objective_score(result: EvalResult, objective: Objective = "margin") -> float:
    """The mean of `objective_values`: one number per (prompt, examples), higher is better."""
    return float(objective_values(result, objective).mean())


def paired_gain(found: Tensor, base: Tensor) -> tuple[float, float]:
    """Mean of ``found − base`` over the same examples and its standard error."""
    diff = (found - base).double()
    se = float(diff.std(unbiased=True) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    return float(diff.mean()), se


def bootstrap_delta(found: EvalResult, base: EvalResult, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The task metric's difference ``found − base`` on the same examples, with a 95% paired-bootstrap
    interval and the bootstrap standard error (percentiles of ``n_boot`` resamples, seeded)."""
    n = found.n
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    kind = kind_of_metric(found.metric)  # the statistic the bootstrap resamples: the task's own metric
    deltas = torch.tensor([kind.statistic(found, i) - kind.statistic(base, i) for i in idx])
    low, high = torch.quantile(deltas.double(), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return {"delta": found.score - base.score, "ci95": [round(low, 6), round(high, 6)],
            "se": float(deltas.std()), "n": n}


@dataclass
class Selection:
    """What the gate decided.

    Attributes:
        chosen: the prompt the search reports (the manual prompt unless the gate passed).
        reliable: whether a found prompt passed the gate.
        best: the best candidate on the selection data (may be the manual prompt).
        gain: the best candidate's mean objective gain over the manual prompt; ``se`` its
            paired standard error; ``n`` the selection examples.
        candidates: per candidate, its fingerprint, text, objective and metric on the selection data.
        message: one line for the user.
    """

    chosen: AnyPrompt
    reliable: bool
    best: AnyPrompt
    gain: float
    se: float
    n: int
    objective: str
    min_gain: float
    candidates: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    against: str = "manual prompt"

    @property
    def detectable_gain(self) -> float | None:
        """The gate's power: the smallest mean objective gain that would have passed it with the
        standard error seen here (``min_gain`` × se of the best found candidate; None without one)."""
        return self.min_gain * self.se if 0 < self.se < math.inf else None

    def to_json(self) -> dict[str, Any]:
        return {"reliable": self.reliable, "objective": self.objective, "min_gain": self.min_gain, "n": self.n,
                "against": self.against, "detectable_gain": self.detectable_gain,
                "gain": self.gain, "se": self.se, "best_fingerprint": self.best.fingerprint,
                "chosen_fingerprint": self.chosen.fingerprint, "candidates": self.candidates,
                "message": self.message}


def choose(evaluator: Evaluator, candidates: Sequence[AnyPrompt], manual: Prompt, examples: Sequence[Example],
           objective: Objective = "margin", min_gain: float = 1.0, gate: bool = True,
           against: str = "manual prompt") -> Selection:
    """Re-score ``candidates`` and ``manual`` on ``examples`` as one job and apply the gate.

    ``manual`` is the prompt to beat: the task's manual prompt, or a warm start (``against`` names
    it in the message).

    The best candidate by mean objective is reported only if its paired gain over ``manual`` exceeds
    ``min_gain`` standard errors (and is positive); otherwise ``manual`` is. Ties keep the manual
    prompt, then the earlier candidate. With ``gate=False`` the best candidate other than the manual
    prompt is reported whatever its gain (``reliable`` still says whether it passed).
    """
    pool = list({p.fingerprint: p for p in (manual, *candidates)}.values())
    results = evaluator.score_many(pool, examples)
    values = [objective_values(r, objective) for r in results]
    means = [float(v.mean()) for v in values]
    contenders = range(len(pool)) if gate or len(pool) == 1 else range(1, len(pool))
    best = max(contenders, key=lambda i: (means[i], -i))
    rows = [{"fingerprint": p.fingerprint, "template": p.template.source, "objective": round(means[i], 6),
             "score": r.score, "manual": i == 0, "prompt": p.to_json()}
            for i, (p, r) in enumerate(zip(pool, results, strict=True))]
    if best == 0:
        # the gate's power still shows: the standard error of the best candidate's paired gain
        se = paired_gain(values[max(range(1, len(pool)), key=lambda i: (means[i], -i))], values[0])[1] \
            if len(pool) > 1 else 0.0
        return Selection(manual, False, manual, 0.0, se, len(examples), objective, min_gain, rows,
                         f"no reliable improvement found: no candidate beat the {against} on {len(examples)} "
                         f"selection examples; reporting the {against}", against)
    gain, se = paired_gain(values[best], values[0])
    passed = gain > 0 and gain > min_gain * se
    if passed or not gate:
        strength = (f"{gain / se:.1f} paired standard errors" if 0 < se < math.inf
                    else "no standard error from so few examples" if se == math.inf else "no variance")
        message = (f"found prompt {'beats' if passed else 'ungated, vs'} the {against} on {len(examples)} "
                   f"selection examples: {gain:+.4f} {objective} ({strength})")
        return Selection(pool[best], passed, pool[best], gain, se, len(examples), objective, min_gain, rows, message,
                         against)
    message = (f"no reliable improvement found: the best candidate gains {gain:+.4f} {objective} ± {se:.4f} over the "
               f"{against} on {len(examples)} selection examples, within {min_gain:g} standard error(s); "
               f"reporting the {against}")
    return Selection(manual, False, pool[best], gain, se, len(examples), objective, min_gain, rows, message, against)
