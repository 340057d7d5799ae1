"""The ``ptuning``, ``prompt_tuning`` and ``prefix`` strategies: one trainer, three parameterisations.

See the package's docstring for the methods; what each mode builds is in `building`, the readout in `readout`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from autoprompt import AnyPrompt, AutopromptError, Example, Prompt, SoftPrompt
from autoprompt.search import SearchContext, Searcher, SearchState, SoftTraining, hyper

from .building import MODE_DEFAULTS, Mode, PromptBuilding
from .passes import loss_weights, passes
from .readout import detached, dev_loss, improves, nearest_token_readout


class PTuningState(SearchState):
    params: dict[str, Tensor]           # the trainable module's state dict
    opt: dict[str, Any]                 # AdamW's per-parameter state (by index): a resume continues it
    k: int                              # optimiser steps taken
    losses: list[float]                 # the recent train losses (the flat-loss warning reads them)
    best_soft: dict[str, Tensor] | None  # the best checkpoint's soft tensors; None: the start prompt won
    best_dev_loss: float
    start_dev: float
    stale: int                          # dev evaluations since the last gain (patience)
    flat_warned: bool


@dataclass
class PTuning(Searcher[PTuningState], PromptBuilding):
    """Continuous prompts with a frozen backbone.

    Args:
        mode: ``prompt`` (Lester), ``ptuning`` (P-tuning v1 encoder) or ``prefix`` (P-tuning v2).
        num_tokens: soft tokens (prompt/ptuning) or prefix length (prefix); default per mode.
        template: a template with ``[S]`` slots to train (prompt/ptuning) instead of the default
            placement (``num_tokens`` slots in front of the manual template).
        init: ``text`` (the embeddings of ``init_text``), ``vocab`` (sampled whole-word tokens) or
            ``random`` (normal, at the embeddings' scale; a prefix's at the text init's keys' and
            values' scale, layer by layer).
        init_text: the text for ``init=text`` (default: the manual template's words and the label
            words), its tokens repeated to ``num_tokens``.
        encoder: P-tuning's prompt encoder, ``mlp`` or ``lstm`` (bi-LSTM + MLP).
        hidden: encoder / re-parameterisation width (default: the model's hidden size).
        reparam: prefix mode: re-parameterise the prefix by an MLP.
        loss: ``class`` (cross-entropy over the label words) or ``word`` (label-word log-lik).
        lr: AdamW learning rate (default per mode).
        weight_decay: AdamW weight decay.
        warmup: fraction of ``steps`` with a linear warm-up (then linear decay to zero).
        steps: optimiser steps at most.
        batch_size: train examples per optimiser step.
        pass_tokens: at most this many input tokens per forward/backward pass: a batch is split into
            passes whose gradients add up to the batch's (the same update, up to float rounding; the
            activations kept for backward are a pass's, not the batch's). An example longer than
            this is a pass of its own. Default: 128 in fp32, 512 in bf16.
        eval_every: optimiser steps between ``dev`` evaluations (one search step).
        patience: ``dev`` evaluations without a gain before stopping early (0: never).
        clip: gradient-norm clipping (0: off).
        flat_steps: warn when the loss has not moved over this many steps.
        keep_manual: the manual prompt competes on ``dev`` (a run never reports worse than it).
        head: ``verbalizer`` (the label words' scores at ``[P]``) or ``linear`` (P-tuning v2's "back to
            [CLS]": a linear classifier on what the LM head reads at ``[P]``, trained with the prompt
            and saved in it; no label words; classification tasks only).
        head_init: ``random`` (P-tuning v2: normal, std 0.02) or ``words`` (the label words' output
            embeddings: training starts at the verbalizer's decision).
        select: what picks the checkpoint on ``dev``: ``metric`` (accuracy, BLEU; ties broken by
            the dev loss) or ``loglik`` (the dev loss alone: cross-entropy, or on a generation task
            the references' per-token log-likelihood, which needs no decoding to be meaningful).
        task_tokens: on a task set (``--task sst2,mr,cr``, mode=prefix): prefix positions each
            member task owns on top of the shared ``num_tokens`` (P-tuning v2's multi-task prefix
            with a small per-task part); 0 shares the whole prefix.

    On a generation task (``e2e``) the prompt trains on the references' teacher-forced
    log-likelihood (per token, the end-of-sequence token included); ``loss`` does not apply.
    """

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

    name = "ptuning"
    summary = "continuous prompts, frozen backbone: prompt tuning, P-tuning (LSTM/MLP encoder), P-tuning v2 prefix"
    default_budget = 5000
    task_kinds = ("classification", "ranking", "generation")
    searches = frozenset({"soft"})  # a start's soft part is replaced, its template and label words kept
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "num_tokens": {"type": "int", "low": 2, "high": 20},
        "encoder": {"type": "categorical", "choices": ["lstm", "mlp"]},
        "init": {"type": "categorical", "choices": ["text", "vocab"]},
    }

    mode: Mode = "prompt"
    num_tokens: int | None = hyper(None, low=1)
    template: str | None = None
    init: Literal["text", "vocab", "random"] = "text"
    init_text: str | None = None
    encoder: Literal["lstm", "mlp"] = "mlp"
    hidden: int | None = None
    reparam: bool = False
    loss: Literal["class", "word"] = "class"
    lr: float | None = None
    weight_decay: float = 0.0
    warmup: float = 0.1
    steps: int = hyper(150, low=1)
    batch_size: int = hyper(8, low=1)
    # None: 128 tokens in fp32 (2-3 16-shot SST-2 examples), which keeps a search's peak under 1.5 GiB on
    # smollm2-135m (activations are about 1.2 MiB a token there, benchmarks/memory.py); 512 in bf16,
    # the speed setting (it holds a bf16 copy of the weights anyway), where small passes cost most:
    # 1.17 -> 0.74 s an optimiser step on 16-shot SST-2 train, 2 threads (benchmarks/ptuning_passes.py)
    pass_tokens: int | None = hyper(None, low=1)
    eval_every: int = hyper(15, low=1)
    patience: int = 4
    clip: float = 1.0
    flat_steps: int = 30
    keep_manual: bool = False
    select: Literal["metric", "loglik"] = "metric"
    head: Literal["verbalizer", "linear"] = "verbalizer"
    head_init: Literal["random", "words"] = "random"
    task_tokens: int = hyper(0, low=0)
    # trained to score uncalibrated: a prior divided out afterwards only moves its decision boundary
    calibration: Literal["none", "contextual", "prior"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = MODE_DEFAULTS.get(self.mode)
        if defaults is None:
            raise AutopromptError(f"ptuning: mode must be prompt, ptuning or prefix, got {self.mode!r}")
        if self.lr is not None and (not self.lr > 0 or not math.isfinite(self.lr)):
            raise AutopromptError(f"ptuning: lr must be a positive number, got {self.lr}")
        if self.template is not None and self.mode == "prefix":
            raise AutopromptError("ptuning: mode=prefix trains a key/value prefix, not [S] slots; drop template")
        if self.task_tokens and self.mode != "prefix":
            raise AutopromptError("ptuning: task_tokens gives each task of a set its own prefix positions; use "
                                  "strategy=prefix (mode=prefix)", params=("task_tokens", "mode"))
        if self.head == "verbalizer" and self.head_init != "random":
            raise AutopromptError("ptuning: `head_init` initialises a linear head; with `head=verbalizer` there is "
                                  "none — set `head=linear` or drop `head_init`", params=("head_init", "head"))
        if self.head == "linear" and self.loss == "word":
            # a head's class scores are logits, not label-word log-probs: -logit(gold) has no floor
            raise AutopromptError("ptuning: `loss=word` trains label-word log-likelihoods, and `head=linear` has "
                                  "no label words — use `loss=class`", params=("loss", "head"))
        if self.task_tokens and self.calibration != "none":
            # one class prior for the set would be divided out of every member's own part
            raise AutopromptError("ptuning: calibration is estimated per prompt, not per task of a set; with "
                                  "task_tokens use calibration=none", params=("task_tokens", "calibration"))

    # ---- the strategy -------------------------------------------------------------------------

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: the initial prompt on dev (and the manual one), a prefix's init text (per member of a
        # set: at most one per train example); a step: ``eval_every`` optimiser steps (a forward and a
        # backward per example) and dev
        inits = 0 if self.mode != "prefix" else 1 + (min(train, 64) if self.task_tokens else 0)
        return dev * (2 if self.keep_manual else 1) + inits, 3 * self.eval_every * min(self.batch_size, train) + dev

    def start(self, ctx: SearchContext) -> PTuningState:
        with torch.random.fork_rng(devices=[]):
            module = self.build(ctx)
        soft = detached(module())
        start = ctx.evaluator.score(self._prompt(ctx, soft), ctx.dev)
        state: PTuningState = {"params": dict(module.state_dict()), "opt": {}, "k": 0, "losses": [],
                               "best_soft": soft.tensors(), "best_dev": start.score, "best_dev_loss": dev_loss(start),
                               "start_dev": start.score, "stale": 0, "flat_warned": False}
        if self.keep_manual:
            manual = ctx.evaluator.score(ctx.start, ctx.dev)
            # the same criterion as each later step's (`select`), ties to the manual prompt
            if (dev_loss(manual) <= dev_loss(start) if self.select == "loglik" else manual.score >= start.score):
                state = {**state, "best_soft": None, "best_dev": manual.score, "best_dev_loss": dev_loss(manual)}
        return state

    def _lr(self, k: int) -> float:
        """Linear warm-up over ``warmup * steps``, then linear decay to zero at ``steps``."""
        warm = max(1, round(self.warmup * self.steps))
        if k < warm:
            return self.learning_rate * (k + 1) / warm
        return self.learning_rate * max(0.0, (self.steps - k) / max(1, self.steps - warm))

    def _pass_tokens(self, ctx: SearchContext) -> int:
        """``pass_tokens``, or its default for the precision the model computes in."""
        if self.pass_tokens is not None:
            return self.pass_tokens
        return 512 if ctx.lm.compute_dtype == "bf16" else 128

    def _batch(self, ctx: SearchContext, k: int) -> list[Example]:
        """Batch ``k``: epochs are seeded shuffles of train, so batches repeat exactly on resume."""
        per_epoch = max(1, len(ctx.train) // self.batch_size)
        epoch, i = divmod(k, per_epoch)
        order = random.Random(f"{ctx.seed}:epoch:{epoch}").sample(range(len(ctx.train)), len(ctx.train))
        return [ctx.train[j] for j in order[i * self.batch_size : (i + 1) * self.batch_size]]

    def step(self, ctx: SearchContext, state: PTuningState) -> PTuningState:
        module = self._module(ctx, state["params"])
        opt = torch.optim.AdamW(module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        if state["opt"]:
            opt.load_state_dict({"state": {int(i): v for i, v in state["opt"].items()},
                                 "param_groups": opt.state_dict()["param_groups"]})
        prompt = self._prompt(ctx, None)
        k, losses = state["k"], list(state["losses"])
        end = min(self.steps, k + self.eval_every)
        while k < end:
            batch = self._batch(ctx, k)
            for group in opt.param_groups:
                group["lr"] = self._lr(k)
            opt.zero_grad()
            loss = 0.0
            weights = loss_weights(ctx, prompt, batch)
            total = sum(weights.values())
            for part in passes(ctx.lm, prompt, batch, self._pass_tokens(ctx)):
                part_loss = self._loss(ctx, prompt, part, module())
                if not torch.isfinite(part_loss):
                    raise AutopromptError(f"ptuning: the loss became {part_loss.item()} at optimiser step {k} "
                                          f"(lr={self.learning_rate}); the last good checkpoint is kept; lower `lr` "
                                          "or set `clip=1`", params=("lr", "clip"))
                share = sum(weights[id(ex)] for ex in part) / total  # the batch mean's part
                (part_loss * share).backward()
                loss += part_loss.item() * share
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), self.clip)
            opt.step()
            losses.append(round(loss, 6))
            k += 1
        losses = losses[-max(self.flat_steps, self.eval_every):]
        recent = losses[-self.flat_steps:]
        flat = len(recent) == self.flat_steps and max(recent) - min(recent) < 1e-4 * max(1.0, abs(recent[-1]))
        if flat and not state["flat_warned"]:
            ctx.warn(f"ptuning: the train loss has not moved over {self.flat_steps} steps ({recent[-1]:.4f}); "
                     f"the prompt is not learning: try a larger lr (now {self.learning_rate}) or another init")

        soft = detached(module())
        result = ctx.evaluator.score(self._prompt(ctx, soft), ctx.dev)
        dev, loss_dev = result.score, dev_loss(result)
        best_loss = state.get("best_dev_loss", math.inf)  # absent in checkpoints of older versions
        better = (loss_dev < best_loss if self.select == "loglik"
                  else improves(dev, loss_dev, state["best_dev"], best_loss))
        stale = 0 if better else state["stale"] + 1
        window = losses[-(k - state["k"]):]
        ctx.report({"optimizer_step": k, "loss": round(sum(window) / len(window), 4), "dev": dev,
                    "dev_loss": round(loss_dev, 4), "lr": self._lr(k - 1)})
        return {
            "params": {n: t.detach().cpu().clone() for n, t in module.state_dict().items()},
            "opt": {str(i): v for i, v in opt.state_dict()["state"].items()},
            "k": k, "losses": losses, "stale": stale, "start_dev": state["start_dev"],
            "flat_warned": state["flat_warned"] or flat,
            "best_soft": soft.tensors() if better else state["best_soft"],
            "best_dev": dev if better else state["best_dev"],
            "best_dev_loss": loss_dev if better else best_loss,
            "done": k >= self.steps or (self.patience > 0 and stale >= self.patience),
        }

    def _loss(self, ctx: SearchContext, prompt: Prompt, batch: list[Example], soft: SoftPrompt) -> Tensor:
        """The training loss of one batch: the gold class's (or label word's) negative log-prob, or on
        a generation task the references' negative log-likelihood per token."""
        lm = ctx.lm
        encoded = [lm.encode(prompt, ex) for ex in batch]
        if ctx.task.is_generation:
            targets = [ctx.ask(SoftTraining).references(prompt, ex) for ex in batch]
            sums = torch.cat(ctx.ask(SoftTraining).target_logprobs(encoded, targets, soft))                   # [R]
            return -sums.sum() / sum(len(t) for ts in targets for t in ts)
        gold = torch.tensor([ex.label for ex in batch], device=lm.device)
        table = [] if self.head == "linear" else lm.word_table(prompt, ctx.task.labels)
        logprobs = ctx.ask(SoftTraining).soft_logprobs(encoded, table, soft, [ex.task for ex in batch])       # [B, C]
        if self.loss == "class":
            logprobs = logprobs.log_softmax(-1)
        return -logprobs[torch.arange(len(batch)), gold].mean()

    def best(self, ctx: SearchContext, state: PTuningState) -> Prompt:
        if state["best_soft"] is None:  # the manual prompt (or the warm start) won on dev (keep_manual)
            return ctx.start
        meta = {"mode": self.mode, **({"head": "linear", "labels": list(ctx.task.labels)} if self.head == "linear"
                                      else {})}
        return self._prompt(ctx, SoftPrompt.from_tensors(state["best_soft"], meta))

    def candidates(self, ctx: SearchContext, state: PTuningState) -> list[AnyPrompt]:
        """The trained prompt, calibrated as the search asks (trained uncalibrated: calibration is post hoc)."""
        return ctx.calibrate([self.best(ctx, state)])

    def details(self, ctx: SearchContext, state: PTuningState) -> dict[str, Any]:
        """Trainable parameters, what was selected, and the nearest-token readout of the slots."""
        with torch.random.fork_rng(devices=[]):
            trainable = sum(p.numel() for p in self.build(ctx, fresh=False).parameters())
        out: dict[str, Any] = {"mode": self.mode, "trainable_parameters": trainable,
                               "backbone_parameters": ctx.lm.num_parameters(),
                               "optimizer_steps": state["k"], "start_dev": state["start_dev"],
                               "selected": "manual" if state["best_soft"] is None else "soft"}
        if self.task_tokens:
            prefix = (state["best_soft"] or {}).get("prefix")
            per_position = 0 if prefix is None else prefix[:, :, :, 0].numel()
            out["task_parameters"] = {name: self.task_tokens * per_position for name in self._members(ctx)}
        if self.head == "linear":
            out["head_parameters"] = len(ctx.task.labels) * (ctx.lm.output_embedding_matrix().shape[1] + 1)
        elif state["best_soft"] is not None and "slots" in state["best_soft"]:  # a head's prompt needs its head
            out["readout"] = nearest_token_readout(ctx, self.best(ctx, state))
        return out
