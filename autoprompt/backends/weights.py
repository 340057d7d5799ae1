"""The frozen weights: freezing, the checksum a search must leave unchanged (offloaded weights
included), where a dispatched model computes, the bf16 copy a CPU search computes in, and the
tensor helpers the backends share."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import Tensor

from autoprompt.backends.protocol import WordTable


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of every weight's bytes: a search must leave it unchanged."""
    h = hashlib.sha256()
    for name, tensor in sorted(_weights(model).items()):
        h.update(name.encode())
        # hashed in place (a view of the weight's own memory): a copy of the largest weight, the 113 MB
        # embedding of the 135M model, was the peak of a whole search's resident memory
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()


def _weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """Every weight by name; one a device map offloaded (a ``meta`` tensor in the module) read from the
    offload store its accelerate hook keeps, so the checksum covers the weights wherever they live."""
    state = model.state_dict()
    if not any(t.device.type == "meta" for t in state.values()):
        return state
    for module_name, module in model.named_modules():
        store = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if store is None:
            continue
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            full = f"{module_name}.{name}" if module_name else name
            if full in state and tensor.device.type == "meta":
                state[full] = store[name]
    return state


def execution_device(device_map: dict[str, Any]) -> torch.device:
    """Where a dispatched model takes its inputs: the first device of its map that computes (an offloaded
    part, ``disk`` or ``cpu``, computes on the CPU unless a GPU holds the rest)."""
    devices = [v for v in device_map.values() if v not in ("disk", "meta")]
    first = next((v for v in devices if v != "cpu"), devices[0] if devices else "cpu")
    return torch.device(f"cuda:{first}" if isinstance(first, int) else first)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_context(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """The most tokens the model reads at once: its tokenizer's ``model_max_length`` where that is
    set (RoBERTa's 514 positions hold 512 tokens), else its config's ``max_position_embeddings``."""
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 10**6:  # unset reads as 1e30
        return declared
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def bf16_body(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` computing in bfloat16 but for its LM head, which keeps the fp32 weights (shared,
    not copied) and reads the hidden state in fp32: class scores are differences of log-probs over the
    whole vocabulary, and bf16 logits (3 significant digits) would blur them most (measured on SST-2,
    16 trigger prompts: Kendall's tau of the mean margins vs fp32 0.88 with a bf16 head)."""
    # each weight is cast as it is copied: a whole fp32 copy cast afterwards peaked 311 MiB higher on
    # smollm2-135m (1,490 vs 1,179 MiB, the copy alone)
    memo: dict[int, Any] = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                            for p in model.parameters() if p.is_floating_point()}
    memo.update({id(b): b.to(torch.bfloat16) for b in model.buffers() if b.is_floating_point()})
    body = copy.deepcopy(model, memo)
    head, fp32_head = body.get_output_embeddings(), model.get_output_embeddings()  # type: ignore[operator]
    if isinstance(head, torch.nn.Linear) and isinstance(fp32_head, torch.nn.Linear):
        head.weight = fp32_head.weight
        if fp32_head.bias is not None:
            head.bias = fp32_head.bias
        head.register_forward_pre_hook(lambda _module, args: (args[0].float(), *args[1:]))
    return body


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def upcast(t: Tensor) -> Tensor:
    """bf16/fp16 logits to float32 for the log-softmax; float64 stays float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def logsumexp_classes(word_scores: Tensor, words: WordTable) -> Tensor:
    """``[B, W]`` scores of all words (flattened in table order) → ``[B, C]`` class scores."""
    out, k = [], 0
    for class_words in words:
        out.append(torch.logsumexp(word_scores[:, k : k + len(class_words)], dim=-1))
        k += len(class_words)
    return torch.stack(out, dim=-1)
