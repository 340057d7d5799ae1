"""Prompts as immutable values: `Template`, `Verbalizer`, `Calibration`, `Prompt` and `Ensemble`.

A template is text with slots:

* ``{field}`` — an input field of the task (``{sentence}``, ``{premise}``);
* ``[T]`` — a trigger token, filled by discrete search (AutoPrompt);
* ``[P]`` — the prediction slot, where label words are scored (exactly one);
* ``[S]`` — a soft token, a trainable embedding for continuous prompts.

Whitespace in front of a slot belongs to the slot: in ``"{sentence} It was [P]"`` the label word
is scored as ``" great"``, which is what a BPE model sees in running text. ``{{``, ``}}`` and
``[[`` escape a literal brace or bracket.

    template.py     Template, Segment: text with slots
    verbalizer.py   Verbalizer: label -> words
    calibration.py  Calibration: none | contextual | prior
    rule.py         Rule: direct | channel | centroid (how class scores are read)
    demos.py        Demonstrations: labelled examples shown with each query (in-context learning)
    prompt.py       Prompt and its JSON
    ensemble.py     Ensemble, AnyPrompt; prompt.json read and written
"""

from autoprompt.prompts.calibration import CALIBRATION_METHODS, NO_CALIBRATION, Calibration, CalibrationMethod
from autoprompt.prompts.demos import Demonstration, Demonstrations
from autoprompt.prompts.ensemble import AnyPrompt, Ensemble, load_prompt, prompt_from_json, save_prompt
from autoprompt.prompts.prompt import Prompt
from autoprompt.prompts.rule import DIRECT, RULES, Rule, RuleName
from autoprompt.prompts.template import Segment, SlotKind, Template
from autoprompt.prompts.verbalizer import Verbalizer

__all__ = ["CALIBRATION_METHODS", "DIRECT", "NO_CALIBRATION", "RULES", "AnyPrompt", "Calibration", "CalibrationMethod",
           "Demonstration", "Demonstrations", "Ensemble", "Prompt", "Rule", "RuleName", "Segment", "SlotKind",
           "Template", "Verbalizer", "load_prompt", "prompt_from_json", "save_prompt"]
