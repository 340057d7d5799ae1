"""Frozen language-model backends behind one protocol: masked LMs and causal LMs.

    protocol.py    LanguageModel (what is called), Encoded, Scores, WordTable
    encoding.py    prompt + example -> token ids (PromptEncoder; backends override three hooks)
    vocabulary.py  which tokens may be a trigger or a label word
    base.py        FrozenLM: freezing, padding, vector injection, the scoring entry points
    masked.py      MaskedLM: [P] anywhere, parallel decoding of multi-token words
    causal.py      CausalLM: [P] last, words as a cached continuation, shared prefixes
    kv_cache.py    key/value caches across transformers versions
"""

from autoprompt.backends.base import FrozenLM, weights_checksum
from autoprompt.backends.causal import CausalLM
from autoprompt.backends.masked import MaskedLM
from autoprompt.backends.protocol import ChannelEncoded, Encoded, Kind, LanguageModel, Scores, WordTable

__all__ = ["CausalLM", "ChannelEncoded", "Encoded", "FrozenLM", "Kind", "LanguageModel", "MaskedLM", "Scores",
           "WordTable", "weights_checksum"]
