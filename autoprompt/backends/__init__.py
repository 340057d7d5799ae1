"""Frozen language-model backends behind one protocol: masked LMs and causal LMs.

    protocol.py    ScoringModel (every backend), GradientModel and TextModel (capabilities), LanguageModel
                   (all three), `full_model` / `gradient_model`, Encoded, Scores, WordTable
    registry.py    backends by name: ``scheme:target`` model names, `register_backend`, entry points
    aliases.py     model aliases, their licences and relative cost
    provision.py   the offline models, provisioned from PyPI into the cache
    store.py       load_model: alias, folder, hub id or ``backend:target``
    encoding.py    prompt + example -> token ids (PromptEncoder; backends override three hooks)
    channel_encoding.py  the same in noisy-channel order: label part first (ChannelEncoder)
    vocabulary.py  which tokens may be a trigger or a label word
    facts.py       what a backend reads off its model: special tokens, word masks, embeddings, sizes
    hidden.py      hidden-state readers: the LM head's input at [P], sentence embeddings (KATE)
    base.py        FrozenLM: padding, vector injection, precision, the scoring entry points
    weights.py     the frozen weights: freezing, checksum (offloaded ones too), the bf16 copy, tensor helpers
    masked.py      MaskedLM: [P] anywhere, parallel decoding of multi-token words
    causal.py      CausalLM: [P] last, words as a cached continuation
    shared_prefix.py  a shared prefix run once, rows continuing from its cache (CausalLM's mixin)
    kv_cache.py    key/value caches across transformers versions
"""

from autoprompt.backends.base import FrozenLM
from autoprompt.backends.causal import CausalLM
from autoprompt.backends.masked import MaskedLM
from autoprompt.backends.protocol import (
    ChannelEncoded,
    Encoded,
    GradientModel,
    Kind,
    LanguageModel,
    Scores,
    ScoringModel,
    TextModel,
    WordTable,
    full_model,
    gradient_model,
)
from autoprompt.backends.registry import register_backend, unregister_backend
from autoprompt.backends.weights import weights_checksum

__all__ = ["CausalLM", "ChannelEncoded", "Encoded", "FrozenLM", "GradientModel", "Kind", "LanguageModel", "MaskedLM",
           "Scores", "ScoringModel", "TextModel", "WordTable", "full_model", "gradient_model", "register_backend",
           "unregister_backend", "weights_checksum"]
