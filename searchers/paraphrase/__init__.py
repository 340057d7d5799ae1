"""``paraphrase``: mined and paraphrased templates, top-1 or ensembles (Jiang et al., 2020, LPAQA).

Candidate templates come from pluggable sources (``sources=manual,mine,paraphrase``):

* **manual** — the task's manual template and any listed in ``templates`` (``||``-separated);
* **mine** — middle words from a corpus (``corpus=FILE``, default the train inputs): for
  classification, the words just before a label word in the text (``{sentence} it was [P]``);
  for LAMA, the words between a training subject and its object in one sentence
  (``{subject} was born in [P]``); frequency-ranked;
* **paraphrase** — rewrites by the frozen LM itself (or ``generator=MODEL``): a causal LM is asked,
  through its chat template where it has one, to rewrite the template, sampled with the seed; a
  masked LM masks one template word at a time and refills it with its top predictions.

Slots survive every rewrite or the rewrite is dropped (and counted): a candidate has exactly the
task's fields and one ``[P]`` (last, on a causal LM). Each round paraphrases the current beam
again; every new candidate is scored on the same train sample as one batched evaluator job, and
the beam is watched on ``dev``. Candidates are ranked by the search's objective (calibrated
as the search is) on that train sample, and the core re-scores the best of them on dev against
the manual prompt (`autoprompt.search.selection`). ``select``: ``auto`` offers the core the top-k
equal-weight ensemble and the best single templates, so the ensemble is reported when it wins
on dev; ``top1`` (single templates only), ``topk`` (an equal-weight ensemble of the
``ensemble_k`` best) or ``optimized`` (the same members, softmax weights learned on the train
sample, as LPAQA) force one form.

    mining.py     templates from a corpus
    rewriting.py  templates rewritten by a frozen LM (asked, or mask-refilled)
    strategy.py   Paraphrase: the beam, scoring, the candidates offered to the core's gate
"""

from .strategy import Paraphrase

__all__ = ["Paraphrase"]
