"""Key/value caches across ``transformers`` versions: the per-layer tensors in, a cache out."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def cache_layers(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """Key/value tensors per layer from a ``transformers`` cache (new or legacy format)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56: Cache.layers[i].keys / .values
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # 4.36 - 4.55: DynamicCache.key_cache / .value_cache
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]  # legacy tuples


def make_cache(layers: list[tuple[Tensor, Tensor]]) -> Any:
    """A ``DynamicCache`` holding ``layers``."""
    from transformers import DynamicCache  # noqa: PLC0415 - heavy import, only when needed

    try:
        return DynamicCache(ddp_cache_data=layers)
    except TypeError:  # older transformers
        return DynamicCache.from_legacy_cache(tuple(layers))  # type: ignore[attr-defined]


def select_rows(cache: Any, rows: Tensor) -> Any:
    """A cache of the batch rows ``rows`` of ``cache`` (rows may repeat)."""
    return make_cache([(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache_layers(cache)])
