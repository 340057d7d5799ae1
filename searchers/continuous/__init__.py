"""Continuous prompts trained through the frozen model, three ways (``ptuning --param mode=...``,
or ``prompt_tuning`` and ``prefix`` by name).

    encoders.py   the trainable modules (free vectors, prompt encoder, key/value prefix)
    building.py   which module each mode trains, and where it starts
    strategy.py   PTuning and its named modes: the trainer, its checkpointed optimiser state, selection
    readout.py    the dev tie-break and the nearest-token readout

* ``prompt`` — prompt tuning (Lester et al., 2021): ``num_tokens`` trainable vectors put in
  front of the task's template, no encoder.
* ``ptuning`` — P-tuning v1 (Liu et al., "GPT understands, too"): pseudo tokens produced by a
  prompt encoder (MLP, or bi-LSTM + MLP) shared across the batch, in front of the template's words
  (which stay as anchors) or at any ``[S]`` slots of a ``template``.
* ``prefix`` — P-tuning v2 / prefix-tuning: a trainable key/value prefix at every layer, passed
  as the model's past key/values with the attention mask extended; optionally re-parameterised
  by an MLP.

With ``head=linear`` (P-tuning v2's "back to [CLS]") the classes are scored by a linear classifier
on what the LM head reads at ``[P]``, trained with the prompt and saved in it, instead of by label
words. On a generation task the prompt trains on the references' teacher-forced likelihood and is
selected on dev BLEU (or dev likelihood, ``select=loglik``).

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

from .building import MODE_DEFAULTS
from .modes import PrefixTuning, PromptTuning
from .readout import dev_loss, improves, nearest_token_readout
from .strategy import PTuning

__all__ = ["MODE_DEFAULTS", "PTuning", "PrefixTuning", "PromptTuning", "dev_loss", "improves", "nearest_token_readout"]
