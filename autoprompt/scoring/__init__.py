"""The one batched scorer and its internals.

`evaluator` (`Evaluator`: prompts × examples → class log-probs, cached and charged to a `budget`),
`batching` (length buckets), `sharing` (a shared input prefix run once), `retrieval` (KATE's
nearest demonstrations), `rules` (channel and centroid decision rules), `generation` (decode and
score generation tasks), `scores` (`EvalResult`, calibration of log-probs), `metrics` and
`text_metrics` (accuracy, F1, LAMA ranking, BLEU, ROUGE-L). Import from the modules; this package
re-exports nothing, so importing one of them never loads the rest.
"""
