"""What the continuous strategies train: the template with its ``[S]`` slots, the trainable module of each
mode (free vectors, a prompt encoder, a key/value prefix; per-task parts and a classification head) and
where each starts (`PromptBuilding`, the part of `PTuning` that builds)."""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
from torch import Tensor, nn

from autoprompt import AutopromptError, Prompt, Segment, SoftPrompt, Template, Verbalizer
from autoprompt.search import SearchContext, SoftTraining

from .encoders import KVPrefix, PromptEncoder, Slots, TaskParts, WithHead

Mode = Literal["prompt", "ptuning", "prefix"]

# per-mode defaults that train on smollm2-135m from 16 shots (chosen by benchmarks/ptuning_defaults.py
# on held-out data, reported by benchmarks/ptuning.py)
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "prompt": {"num_tokens": 10, "lr": 3e-3},
    "ptuning": {"num_tokens": 10, "lr": 1e-3},
    "prefix": {"num_tokens": 10, "lr": 3e-3},
}


class PromptBuilding:
    """Builds `PTuning`'s trainable module from its hyper-parameters (a mixin: `PTuning` holds the fields)."""

    mode: Mode
    num_tokens: int | None
    lr: float | None
    template: str | None
    init: Literal["text", "vocab", "random"]
    init_text: str | None
    encoder: Literal["lstm", "mlp"]
    hidden: int | None
    reparam: bool
    head: Literal["verbalizer", "linear"]
    head_init: Literal["random", "words"]
    task_tokens: int

    @property
    def tokens(self) -> int:
        """``num_tokens``, or the mode's default where it is None (the field keeps what was given)."""
        return int(self.num_tokens if self.num_tokens is not None else MODE_DEFAULTS[self.mode]["num_tokens"])

    @property
    def learning_rate(self) -> float:
        """``lr``, or the mode's default where it is None."""
        return float(self.lr if self.lr is not None else MODE_DEFAULTS[self.mode]["lr"])

    # ---- the prompt and its parameters --------------------------------------------------------

    def prompt_template(self, ctx: SearchContext) -> Template:
        """The template whose ``[S]`` slots are trained (prefix mode: the manual template)."""
        manual = ctx.start.template
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
        return Template.from_segments([Segment("soft")] * self.tokens + list(manual.segments))

    def _init_ids(self, ctx: SearchContext, n: int) -> list[int]:
        """Token ids whose embeddings start the soft tokens (``init=text`` or ``vocab``; with
        ``init=random`` the text whose scale the noise takes)."""
        if self.init == "vocab":
            words = ctx.lm.word_start_tokens().nonzero()[:, 0].tolist()
            return random.Random(f"{ctx.seed}:init").sample(words, n)
        manual = ctx.start
        text = self.init_text or " ".join(
            [s.value.strip() for s in manual.template.segments if s.kind == "text" and s.value.strip()]
            + [w for ws in manual.verbalizer.words.values() for w in ws])
        ids = list(ctx.lm.tokenize(" " + text.strip()))
        if not ids:
            raise AutopromptError("ptuning: init_text has no tokens; give a text or use init=vocab")
        return (ids * (n // len(ids) + 1))[:n]

    def _vectors(self, ctx: SearchContext, n: int) -> Tensor:
        """``[n, H]`` starting vectors at the embeddings' scale."""
        if self.init == "random":
            emb = ctx.lm.embedding_matrix().detach().float()
            gen = torch.Generator().manual_seed(ctx.seed)
            return torch.randn(n, emb.shape[1], generator=gen) * float(emb.std()) * ctx.lm.embed_scale
        ids = torch.tensor(self._init_ids(ctx, n), device=ctx.lm.embedding_matrix().device)
        return ctx.lm.input_embeddings(ids).detach().float().cpu().clone()

    def build(self, ctx: SearchContext, fresh: bool = True) -> nn.Module:
        """The trainable module for this mode (with its per-task parts and classification head),
        freshly initialised from the seed; ``fresh=False``: its shapes only (a prefix's keys and values
        zeros, no forward pass), for parameters about to be loaded."""
        prompt = self._build_prompt(ctx, fresh)
        if self.task_tokens:
            names = self._members(ctx)
            prompt = TaskParts(prompt, names, [self._prefix_init(ctx, self.task_tokens, fresh, member=n)
                                               for n in names])
        if self.head == "verbalizer":
            return prompt
        if ctx.task.is_generation:
            raise AutopromptError("ptuning: head=linear classifies; a generation task has no classes — use "
                                  "head=verbalizer", params=("head",))
        init = None
        if self.head_init == "words":
            table = ctx.lm.word_table(ctx.start, ctx.task.labels)
            init = ctx.lm.output_embedding_matrix()[[ws[0][0] for ws in table]].detach().float().cpu()
        return WithHead(prompt, len(ctx.task.labels), ctx.lm.output_embedding_matrix().shape[1], init)

    def _members(self, ctx: SearchContext) -> list[str]:
        """The member tasks of the task set being searched (the order their examples first appear)."""
        names = list(dict.fromkeys(ex.task for ex in ctx.train))
        if ctx.task.is_generation:
            raise AutopromptError("ptuning: task_tokens is for classification task sets; use task_tokens=0",
                                  params=("task_tokens",))
        if "" in names or len(names) < 2:
            raise AutopromptError(f"ptuning: task_tokens gives each task of a set its own prefix positions, but "
                                  f"{ctx.task.name} is one task; search a set (--task sst2,mr,cr) or drop task_tokens",
                                  params=("task_tokens",))
        return names

    def _prefix_init(self, ctx: SearchContext, n: int, fresh: bool = True, member: str = "") -> Tensor:
        """``[L, 2, K, n, D]`` starting keys and values: the model's own for ``n`` init tokens (one
        metered forward), or (``init=random``) seeded normal noise at the per-layer scale of the text
        init's (the pad token's can be all zeros), a noise stream of its own for each ``member``'s
        per-task part (not the shared prefix's leading values again); zeros where not ``fresh``."""
        if not fresh:
            return torch.zeros(ctx.lm.prefix_shape(n))
        kv = ctx.ask(SoftTraining).prefix_from_text(self._init_ids(ctx, n)).cpu()
        if self.init == "random":
            seed = random.Random(f"{ctx.seed}:task:{member}").getrandbits(63) if member else ctx.seed
            gen = torch.Generator().manual_seed(seed)
            kv = torch.randn(kv.shape, generator=gen) * kv.std(dim=(1, 2, 3, 4), keepdim=True)
        return kv

    def _build_prompt(self, ctx: SearchContext, fresh: bool = True) -> nn.Module:
        torch.manual_seed(ctx.seed)  # the encoder's layers; restored by the caller's fork_rng
        hidden = self.hidden or ctx.lm.embedding_matrix().shape[1]
        if self.mode == "prefix":
            ctx.lm.check_prefix()
            kv = self._prefix_init(ctx, self.tokens, fresh)
            return KVPrefix(kv, self._vectors(ctx, self.tokens) if self.reparam else None, hidden)
        n = self.prompt_template(ctx).num_soft
        if self.mode == "prompt":
            return Slots(self._vectors(ctx, n))
        return PromptEncoder(self._vectors(ctx, n), self.encoder, hidden)

    def _module(self, ctx: SearchContext, params: dict[str, Tensor]) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            module = self.build(ctx, fresh=False)
        module.load_state_dict(params)
        return module.to(ctx.lm.device)

    def _prompt(self, ctx: SearchContext, soft: SoftPrompt | None) -> Prompt:
        # with a classification head there are no label words: the head scores the classes
        words = Verbalizer({}) if self.head == "linear" else ctx.start.verbalizer
        return Prompt(self.prompt_template(ctx), words, soft=soft)
