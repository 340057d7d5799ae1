"""Helpers for testing autoprompt and third-party strategies: tiny in-process models and tasks."""

from autoprompt.testing.tiny import tiny_causal_lm, tiny_generation_task, tiny_masked_lm, tiny_task

__all__ = ["tiny_causal_lm", "tiny_generation_task", "tiny_masked_lm", "tiny_task"]
