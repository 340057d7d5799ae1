"""Tiny random-weight models with small trained tokenizers, built in-process in about a second.

They exercise the real ``transformers`` code paths (Llama/GPT-2 causal, BERT masked) without a
download, so tests of scoring, batching and search run fast and offline.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from autoprompt.backends import CausalLM, MaskedLM
from autoprompt.tasks.base import Example, SplitLoader, Task, TaskData

POSITIVE = ["good", "great", "fine", "nice", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible", "weak"]
NOUNS = ["movie", "film", "plot", "cast", "story", "music", "ending", "script"]


def _corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        lines.append(f"the {rng.choice(NOUNS)} was {rng.choice(POSITIVE + NEGATIVE)} .")
    lines += ["Review: it was great. Sentiment (positive or negative): positive",
              "Question: is it true? Answer: yes no maybe neither", "It was terrible . It was great ."]
    return lines


def _bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def _sentencepiece_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A unigram model over ``▁``-marked words with a dummy prefix (the Llama-2/T5 sentencepiece
    convention): every tokenized string starts a word, so pieces tokenized apart differ from the
    whole string at their joins, which is what the encoder must get right."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def _wordpiece_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(_corpus(), trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_causal_lm(arch: str = "llama", seed: int = 0, tie: bool = True, tokenizer_kind: str = "bpe",
                   **kwargs: Any) -> CausalLM:
    """A 2-layer causal LM (``llama`` or ``gpt2``) with a byte-level BPE tokenizer (or, with
    ``tokenizer_kind="sentencepiece"``, a unigram one with a dummy prefix), CPU, frozen.

    ``tie=False`` gives the LM head its own weights (tests that plant a signal there).
    """
    tokenizer = _sentencepiece_tokenizer() if tokenizer_kind == "sentencepiece" else _bpe_tokenizer()
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    config: PretrainedConfig
    model: PreTrainedModel
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=tie)
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            tie_word_embeddings=tie)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    return CausalLM(model, tokenizer, name=f"tiny-{arch}", device="cpu", max_length=128, **kwargs)


def tiny_masked_lm(seed: int = 0, tie: bool = True, **kwargs: Any) -> MaskedLM:
    """A 2-layer BERT masked LM with a WordPiece tokenizer, CPU, frozen."""
    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                        tie_word_embeddings=tie)
    return MaskedLM(BertForMaskedLM(config), tokenizer, name="tiny-bert", device="cpu", max_length=128, **kwargs)


def tiny_task(n: int = 24, seed: int = 0) -> TaskData:
    """A binary sentiment task on generated sentences (label = polarity of its adjective)."""
    rng = random.Random(seed)

    def make(k: int) -> list[Example]:
        out = []
        for i in range(k):
            label = i % 2
            adj = rng.choice(POSITIVE if label else NEGATIVE)
            filler = " ".join(rng.choice(NOUNS) for _ in range(rng.randint(0, 6)))
            out.append(Example({"sentence": f"the {rng.choice(NOUNS)} was {adj} {filler}".strip()}, label))
        return out

    splits = {"train": make(n), "dev": make(n // 2), "test": make(n // 2)}
    task = Task("tiny", ("sentence",), ("negative", "positive"), "{sentence} It was [P]",
                {"negative": ["bad"], "positive": ["good"]}, "accuracy", "tiny generated sentiment")
    return TaskData(task, {"shots": None, "data_seed": seed, "sources": {"generated": "tiny_task"}},
                    # mypy types a lambda with a default argument as taking one: cast to the no-argument loader
                    {s: cast(SplitLoader, lambda s=s: splits[s]) for s in splits})


def tiny_generation_task(seed: int = 0) -> TaskData:
    """A generation task on generated records: ``name[X], food[Y]`` → "X serves Y food." (dev and
    test inputs carry two references each, train examples one)."""
    rng = random.Random(seed)

    def make(k: int, refs: int) -> list[Example]:
        out = []
        for _ in range(k):
            name, food = rng.choice(NOUNS), rng.choice(POSITIVE + NEGATIVE)
            targets = (f"the {name} serves {food} food", f"a {name} with {food} food")[:refs]
            out.append(Example({"mr": f"name[{name}], food[{food}]"}, 0, targets))
        return out

    splits = {"train": make(12, 1), "dev": make(4, 2), "test": make(4, 2)}
    task = Task("tinygen", ("mr",), (), "{mr}\nDescription: [P]", {}, "bleu", "tiny generated records",
                kind="generation")
    return TaskData(task, {"shots": None, "data_seed": seed, "sources": {"generated": "tiny_generation_task"}},
                    {s: cast(SplitLoader, lambda s=s: splits[s]) for s in splits})


def toy_task_file(folder: Path) -> Path:
    """A tiny custom task on disk (CSV files and its TOML), for CLI tests and worker processes."""
    rows = ["text,label"] + [f"the film was {w},{lab}" for w, lab in
                             [("good", 1), ("bad", 0), ("great", 1), ("awful", 0), ("fine", 1), ("dull", 0)] * 3]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "test.csv").write_text("\n".join(rows[:7]) + "\n")
    spec = folder / "toy.toml"
    spec.write_text('name = "toy"\nfields = ["text"]\nlabel_column = "label"\nlabels = ["0", "1"]\n'
                    'template = "{text} It was [P]"\n[files]\ntrain = "train.csv"\ntest = "test.csv"\n'
                    '[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')
    return spec
