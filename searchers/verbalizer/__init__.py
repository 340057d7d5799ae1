"""``verbalizer``: label-word search — AutoPrompt's probe, LM-BFF's auto-L and PETAL in one strategy.

The template stays fixed; what changes is which words stand for each label. Every method
ranks candidate words per class from statistics at the prediction slot over train examples:

* ``probe`` (AutoPrompt's label search): a logistic-regression probe on the hidden state the LM
  head sees at ``[P]``; each vocabulary word scores ``softmax_c(w_c · e_word + b_c)``, its output
  embedding against the probe's weights and bias;
* ``likelihood`` (LM-BFF auto-L): per class, the mean log-probability of the word over that
  class's train examples;
* ``petal`` (Schick et al., 2020): the balanced likelihood ratio, log of the word's mean
  probability on the class's examples over its mean probability on the other classes' examples
  (each class weighted equally).

The statistics are calibrated as the search is (``calibration``): each word's log-prob has the
word's log-prob on content-free inputs (``contextual``) or its mean probability over the train
inputs (``prior``) taken out, so a word the model says everywhere ("great") does not win by
being frequent. Calibration alone is a pointwise mutual information, which favours words the model
almost never says at the slot (on 16 shots, rare words whose few mentions happen to fall in one
class: ``anyway``/``enhanced`` for SST-2); so candidates are first cut to the ``vocab`` words the
model finds most probable at ``[P]`` over the train inputs, before calibration, as LM-BFF's
auto-L keeps the words the model already predicts there.

Under the ``channel`` decision rule (``rule=channel``), a word is used *before* the input (the class
score is the input's log-likelihood after the label part), so the statistics above only propose a
shortlist (the top ``k`` per class, fewer if the budget is short): each shortlisted word's channel
log-likelihood of every statistics example is computed (`Evaluator.channel_word_logliks`, one
forward per word and example), centred per example, and the words of a class are re-ranked by their
mean on the class's examples minus the other classes' means — words that make their own class's
inputs likely — and the assignments below are ranked on those channel scores.

Then selection on train, shared by all methods: with ``words_per_class=1``, every assignment of
one of the top-``k`` words to each class (the starting verbalizer's words always among them) is
ranked by the search's objective on the train statistics, and the best ``n_pairs`` (plus the
starting verbalizer) are re-scored exactly, calibrated, through the evaluator on the same train
examples; with more words per class, the top words per class form one verbalizer. The best by
train are the candidates the core re-scores on dev against the manual prompt. Candidates are
whole words (word-initial tokens); with ``max_word_tokens > 1``, frequent words of the train
inputs that take up to that many tokens join them, scored exactly.
"""

from .strategy import VerbalizerSearch

__all__ = ["VerbalizerSearch"]
