"""``ptuning``: continuous prompts trained through the frozen model, three ways (``mode``).

* ``prompt`` — prompt tuning (Lester et al., 2021): ``num_tokens`` trainable vectors put in
  front of the task's template, no encoder.
* ``ptuning`` — P-tuning v1 (Liu et al., "GPT understands, too"): pseudo tokens produced by a
  prompt encoder (MLP, or bi-LSTM + MLP) shared across the batch, in front of the template's words
  (which stay as anchors) or at any ``[S]`` slots of a ``template``.
* ``prefix`` — P-tuning v2 / prefix-tuning: a trainable key/value prefix at every layer, passed
  as the model's past key/values with the attention mask extended; optionally re-parameterised
  by an MLP.

Only the prompt's parameters train; the backbone is frozen and never written. The loss is the
cross-entropy of the verbalizer's class scores at ``[P]`` (``loss=class``, as PET/LM-BFF) or the
label word's log-likelihood over the whole vocabulary (``loss=word``), computed by the same
backend code the evaluator scores with (`FrozenLM.soft_logprobs`), so a soft prompt scores as it
trained. Each search step is ``eval_every`` optimiser steps then a ``dev`` evaluation; the best
on ``dev`` is kept and ``patience`` evaluations without a gain stop the run. "Best" is the dev
metric, ties broken by the dev cross-entropy: 32 dev examples move accuracy in steps of 1/32, so
ties are common, and without the tie-break the first checkpoint that reaches a level (often one
barely trained) would win and early stopping would end training there.

Initialisation matters: every parameterisation here *starts at* real embeddings (of a text, or of
sampled vocabulary words), and the encoders add a learned correction whose last layer starts at
zero. Soft tokens that start far from the embedding scale do not train (OpenPrompt's P-tuning,
whose soft tokens start ~1.75x larger than word vectors, stays at chance on SmolLM2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from autoprompt import AnyPrompt, AutopromptError, EvalResult, Evaluator, Prompt, Segment, SoftPrompt, Template
from autoprompt.search import SearchContext, Searcher

Mode = Literal["prompt", "ptuning", "prefix"]

# per-mode defaults that train on smollm2-135m from 16 shots (chosen by benchmarks/ptuning_defaults.py
# on held-out data, reported by benchmarks/ptuning.py)
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "prompt": {"num_tokens": 10, "lr": 3e-3},
    "ptuning": {"num_tokens": 10, "lr": 1e-3},
    "prefix": {"num_tokens": 10, "lr": 3e-3},
}


class _Slots(nn.Module):
    """Prompt tuning: the vectors themselves. ``[S, H]``."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.vectors = nn.Parameter(init.clone())

    def forward(self) -> SoftPrompt:
        return SoftPrompt(slots=self.vectors)


class _Encoder(nn.Module):
    """P-tuning's prompt encoder: ``inputs + head(LSTM(inputs))`` (or ``inputs + head(inputs)``).

    The head's last layer starts at zero, so training starts from the init embeddings and the
    encoder learns a correction that couples the pseudo tokens.
    """

    def __init__(self, init: Tensor, kind: str, hidden: int) -> None:
        super().__init__()
        size = init.shape[1]
        self.inputs = nn.Parameter(init.clone())                                 # [S, H]
        self.lstm = nn.LSTM(size, hidden // 2, num_layers=2, bidirectional=True, batch_first=True) \
            if kind == "lstm" else None
        self.head = nn.Sequential(nn.Linear(hidden if self.lstm else size, hidden), nn.ReLU(), nn.Linear(hidden, size))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def forward(self) -> SoftPrompt:
        x = self.inputs
        h = self.lstm(x[None])[0][0] if self.lstm is not None else x           # [S, hidden]
        return SoftPrompt(slots=x + self.head(h))


class _Prefix(nn.Module):
    """A key/value prefix ``[L, 2, K, P, D]``: free, or ``init + MLP(embedding)`` (re-parameterised)."""

    def __init__(self, init: Tensor, token_init: Tensor | None, hidden: int) -> None:
        super().__init__()
        self.shape = tuple(init.shape)
        if token_init is None:
            self.prefix = nn.Parameter(init.clone())
        else:
            self.register_buffer("base", init.clone())
            self.tokens = nn.Parameter(token_init.clone())                       # [P, H]
            out = init[:, :, :, 0].numel()                                       # L * 2 * K * D
            self.mlp = nn.Sequential(nn.Linear(token_init.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, out))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self) -> SoftPrompt:
        if hasattr(self, "prefix"):
            return SoftPrompt(prefix=self.prefix)
        n_layers, _, heads, length, dim = self.shape
        delta = self.mlp(self.tokens).view(length, n_layers, 2, heads, dim).permute(1, 2, 3, 0, 4)
        return SoftPrompt(prefix=self.base + delta)


@dataclass
class PTuning(Searcher):
    """Continuous prompts with a frozen backbone.

    Args:
        mode: ``prompt`` (Lester), ``ptuning`` (P-tuning v1 encoder) or ``prefix`` (P-tuning v2).
        num_tokens: soft tokens (prompt/ptuning) or prefix length (prefix); default per mode.
        template: a template with ``[S]`` slots to train (prompt/ptuning) instead of the default
            placement (``num_tokens`` slots in front of the manual template).
        init: ``text`` (the embeddings of ``init_text``), ``vocab`` (sampled whole-word tokens) or
            ``random`` (normal, at the embeddings' scale).
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
        eval_every: optimiser steps between ``dev`` evaluations (one search step).
        patience: ``dev`` evaluations without a gain before stopping early (0: never).
        clip: gradient-norm clipping (0: off).
        flat_steps: warn when the loss has not moved over this many steps.
        keep_manual: the manual prompt competes on ``dev`` (a run never reports worse than it).
    """

    name = "ptuning"
    summary = "continuous prompts, frozen backbone: prompt tuning, P-tuning (LSTM/MLP encoder), P-tuning v2 prefix"
    default_budget = 5000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "num_tokens": {"type": "int", "low": 2, "high": 20},
        "encoder": {"type": "categorical", "choices": ["lstm", "mlp"]},
        "init": {"type": "categorical", "choices": ["text", "vocab"]},
    }

    mode: Mode = "prompt"
    num_tokens: int | None = None
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
    steps: int = 150
    batch_size: int = 8
    eval_every: int = 15
    patience: int = 4
    clip: float = 1.0
    flat_steps: int = 30
    keep_manual: bool = False
    # trained to score uncalibrated: a prior divided out afterwards only moves its decision boundary
    calibration: Literal["none", "contextual", "prior"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = MODE_DEFAULTS.get(self.mode)
        if defaults is None:
            raise AutopromptError(f"ptuning: mode must be prompt, ptuning or prefix, got {self.mode!r}")
        if self.num_tokens is None:
            self.num_tokens = defaults["num_tokens"]
        if self.lr is None:
            self.lr = defaults["lr"]
        for key in ("num_tokens", "steps", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise AutopromptError(f"ptuning: {key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise AutopromptError(f"ptuning: lr must be a positive number, got {self.lr}")
        if self.template is not None and self.mode == "prefix":
            raise AutopromptError("ptuning: mode=prefix trains a key/value prefix, not [S] slots; drop template")

    # ---- the prompt and its parameters --------------------------------------------------------

    def prompt_template(self, ctx: SearchContext) -> Template:
        """The template whose ``[S]`` slots are trained (prefix mode: the manual template)."""
        manual = ctx.task.default_prompt.template
        if self.mode == "prefix":
            return manual
        if self.template is not None:
            template = Template(self.template)
            template.check_fields(ctx.task.fields)
            if not template.num_soft:
                raise AutopromptError(f"ptuning: template {self.template!r} has no [S] slot to train; add some")
            return template
        # in front, as Lester and PEFT: on smollm2 this beats P-tuning's pseudo tokens between the
        # input and the template's words (0.80 vs 0.71 held-out SST-2, benchmarks/ptuning_defaults.py)
        return Template.from_segments([Segment("soft")] * self.num_tokens + list(manual.segments))

    def _init_ids(self, ctx: SearchContext, n: int) -> list[int]:
        """Token ids whose embeddings start the soft tokens (``init=text`` or ``vocab``)."""
        if self.init == "vocab":
            words = ctx.lm.word_start_tokens().nonzero()[:, 0].tolist()
            return random.Random(f"{ctx.seed}:init").sample(words, n)
        manual = ctx.task.default_prompt
        text = self.init_text or " ".join(
            [s.value.strip() for s in manual.template.segments if s.kind == "text" and s.value.strip()]
            + [w for ws in manual.verbalizer.words.values() for w in ws])
        ids = list(ctx.lm.tokenize(" " + text.strip()))
        if not ids:
            raise AutopromptError("ptuning: init_text has no tokens; give a text or use init=vocab")
        return (ids * (n // len(ids) + 1))[:n]

    def _vectors(self, ctx: SearchContext, n: int) -> Tensor:
        """``[n, H]`` starting vectors at the embeddings' scale."""
        emb = ctx.lm.embedding_matrix().detach().float().cpu()
        if self.init == "random":
            gen = torch.Generator().manual_seed(ctx.seed)
            return torch.randn(n, emb.shape[1], generator=gen) * emb.std()
        return emb[self._init_ids(ctx, n)].clone()

    def build(self, ctx: SearchContext) -> nn.Module:
        """The trainable module for this mode, freshly initialised from the seed."""
        torch.manual_seed(ctx.seed)  # the encoder's layers; restored by the caller's fork_rng
        hidden = self.hidden or ctx.lm.embedding_matrix().shape[1]
        if self.mode == "prefix":
            ctx.lm.check_prefix()
            ids = self._init_ids(ctx, self.num_tokens) if self.init != "random" else [ctx.lm.pad_id] * self.num_tokens
            kv = ctx.lm.prefix_from_text(ids).cpu()
            if self.init == "random":
                gen = torch.Generator().manual_seed(ctx.seed)
                kv = torch.randn(kv.shape, generator=gen) * kv.std(dim=(1, 2, 3, 4), keepdim=True)
            return _Prefix(kv, self._vectors(ctx, self.num_tokens) if self.reparam else None, hidden)
        n = self.prompt_template(ctx).num_soft
        if self.mode == "prompt":
            return _Slots(self._vectors(ctx, n))
        return _Encoder(self._vectors(ctx, n), self.encoder, hidden)

    def _module(self, ctx: SearchContext, params: dict[str, Tensor]) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            module = self.build(ctx)
        module.load_state_dict(params)
        return module.to(ctx.lm.device)

    def _prompt(self, ctx: SearchContext, soft: SoftPrompt | None) -> Prompt:
        return Prompt(self.prompt_template(ctx), ctx.task.default_prompt.verbalizer, soft=soft)

    # ---- the strategy -------------------------------------------------------------------------

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: the initial prompt on dev (and the manual one); a step: ``eval_every`` optimiser
        # steps (a forward and a backward per example) and dev
        return dev * (2 if self.keep_manual else 1), 3 * self.eval_every * min(self.batch_size, train) + dev

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            module = self.build(ctx)
        soft = _detached(module())
        start = ctx.evaluator.score(self._prompt(ctx, soft), ctx.dev)
        state = {"params": dict(module.state_dict()), "opt": {}, "k": 0, "losses": [], "best_soft": soft.tensors(),
                 "best_dev": start.score, "best_dev_loss": dev_loss(start), "start_dev": start.score, "stale": 0,
                 "flat_warned": False}
        if self.keep_manual:
            manual = ctx.evaluator.score(ctx.task.default_prompt, ctx.dev)
            if manual.score >= start.score:
                state.update(best_soft=None, best_dev=manual.score, best_dev_loss=dev_loss(manual))
        return state

    def _lr(self, k: int) -> float:
        """Linear warm-up over ``warmup * steps``, then linear decay to zero at ``steps``."""
        warm = max(1, round(self.warmup * self.steps))
        if k < warm:
            return self.lr * (k + 1) / warm
        return self.lr * max(0.0, (self.steps - k) / max(1, self.steps - warm))

    def _batch(self, ctx: SearchContext, k: int) -> list:
        """Batch ``k``: epochs are seeded shuffles of train, so batches repeat exactly on resume."""
        per_epoch = max(1, len(ctx.train) // self.batch_size)
        epoch, i = divmod(k, per_epoch)
        order = random.Random(f"{ctx.seed}:epoch:{epoch}").sample(range(len(ctx.train)), len(ctx.train))
        return [ctx.train[j] for j in order[i * self.batch_size : (i + 1) * self.batch_size]]

    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        lm = ctx.lm
        module = self._module(ctx, state["params"])
        opt = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if state["opt"]:
            opt.load_state_dict({"state": {int(i): v for i, v in state["opt"].items()},
                                 "param_groups": opt.state_dict()["param_groups"]})
        prompt = self._prompt(ctx, None)
        table = lm.word_table(prompt, ctx.task.labels)
        k, losses = state["k"], list(state["losses"])
        end = min(self.steps, k + self.eval_every)
        while k < end:
            batch = self._batch(ctx, k)
            for group in opt.param_groups:
                group["lr"] = self._lr(k)
            gold = torch.tensor([ex.label for ex in batch], device=lm.device)
            logprobs = ctx.soft_logprobs([lm.encode(prompt, ex) for ex in batch], table, module())  # [B, C]
            if self.loss == "class":
                logprobs = logprobs.log_softmax(-1)
            loss = -logprobs[torch.arange(len(batch)), gold].mean()
            if not torch.isfinite(loss):
                raise AutopromptError(f"ptuning: the loss became {loss.item()} at optimiser step {k} (lr={self.lr}); "
                                      "the last good checkpoint is kept; lower `lr` or set `clip=1`",
                                      params=("lr", "clip"))
            opt.zero_grad()
            loss.backward()
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), self.clip)
            opt.step()
            losses.append(round(loss.item(), 6))
            k += 1
        losses = losses[-max(self.flat_steps, self.eval_every):]
        recent = losses[-self.flat_steps:]
        flat = len(recent) == self.flat_steps and max(recent) - min(recent) < 1e-4 * max(1.0, abs(recent[-1]))
        if flat and not state["flat_warned"]:
            ctx.warn(f"ptuning: the train loss has not moved over {self.flat_steps} steps ({recent[-1]:.4f}); "
                     f"the prompt is not learning: try a larger lr (now {self.lr}) or another init")

        soft = _detached(module())
        result = ctx.evaluator.score(self._prompt(ctx, soft), ctx.dev)
        dev, loss_dev = result.score, dev_loss(result)
        best_loss = state.get("best_dev_loss", math.inf)  # absent in checkpoints of older versions
        better = improves(dev, loss_dev, state["best_dev"], best_loss)
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

    def best(self, ctx: SearchContext, state: dict[str, Any]) -> Prompt:
        if state["best_soft"] is None:  # the manual prompt won on dev (keep_manual)
            return ctx.task.default_prompt
        return self._prompt(ctx, SoftPrompt(**state["best_soft"], meta={"mode": self.mode}))

    def candidates(self, ctx: SearchContext, state: dict[str, Any]) -> list[AnyPrompt]:
        """The trained prompt, calibrated as the search asks (trained uncalibrated: calibration is post hoc)."""
        return ctx.calibrate([self.best(ctx, state)])

    def details(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        """Trainable parameters, what was selected, and the nearest-token readout of the slots."""
        with torch.random.fork_rng(devices=[]):
            trainable = sum(p.numel() for p in self.build(ctx).parameters())
        out: dict[str, Any] = {"mode": self.mode, "trainable_parameters": trainable,
                               "backbone_parameters": ctx.lm.num_parameters(),
                               "optimizer_steps": state["k"], "start_dev": state["start_dev"],
                               "selected": "manual" if state["best_soft"] is None else "soft"}
        if state["best_soft"] is not None and "slots" in state["best_soft"]:
            out["readout"] = nearest_token_readout(ctx, self.best(ctx, state))
        return out


def dev_loss(result: EvalResult) -> float:
    """Mean cross-entropy of the gold class over the verbalizer's classes (the tie-break on dev)."""
    logprobs = result.logprobs.float().log_softmax(-1)                      # [N, C]
    return -logprobs[torch.arange(result.n), result.labels].mean().item()


def improves(score: float, loss: float, best_score: float, best_loss: float) -> bool:
    """A higher dev metric, or the same metric at a lower dev cross-entropy."""
    return score > best_score or (score == best_score and loss < best_loss)


def nearest_token_readout(ctx: SearchContext, prompt: Prompt, k: int = 3) -> dict[str, Any]:
    """Each soft vector's nearest vocabulary tokens, and the discrete prompt they spell, scored on dev.

    The discrete prompt puts the nearest token in each ``[S]`` (as a ``[T]`` trigger); its dev
    score says how much of what the soft prompt does survives discretisation.
    """
    soft = prompt.soft
    assert isinstance(soft, SoftPrompt) and soft.slots is not None
    lm = ctx.lm
    cos, ids = soft.nearest(lm.embedding_matrix(), k)                                              # [S, k]
    decode = lambda i: lm.tokenizer.convert_tokens_to_string([lm.tokenizer.convert_ids_to_tokens(i)])
    segments = [Segment("trigger", space=s.space) if s.kind == "soft" else s for s in prompt.template.segments]
    discrete = Prompt(Template.from_segments(segments), prompt.verbalizer, tuple(ids[:, 0].tolist()))
    dev = Evaluator(lm, ctx.task).score(discrete, ctx.dev).score  # outside the budget: a report, not search
    pieces = discrete.template.render({f: "{" + f + "}" for f in ctx.task.fields}, trigger="\0").split("\0")
    text = pieces[0] + "".join(f"[{decode(i)}]{p}" for i, p in zip(discrete.trigger_ids, pieces[1:], strict=True))
    return {"nearest": [[decode(i) for i in row] for row in ids.tolist()],
            "cosine": [round(c, 3) for c in cos[:, 0].tolist()],
            "discrete_prompt": text, "discrete_trigger_ids": list(discrete.trigger_ids), "discrete_dev": dev}


def _detached(soft: SoftPrompt) -> SoftPrompt:
    return SoftPrompt(*(None if t is None else t.detach().cpu().clone() for t in (soft.slots, soft.prefix)))
