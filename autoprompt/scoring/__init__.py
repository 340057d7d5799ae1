"""The one batched scorer and its internals.

`evaluator` (`Evaluator`: prompts × examples → class log-probs, cached and charged to a `budget`),
`fitting` (its calibration and decision-rule fitting), `runner` (`BatchRunner`: the batches one
scoring runs), `batching` (length buckets), `sharing` (a shared input prefix run once), `retrieval`
(KATE's nearest demonstrations), `rules` (channel and centroid decision rules), `soft_checks` (a soft
prompt against its template, model and task), `generation` (decode and score generation tasks),
`scores` (`EvalResult`, calibration of log-probs), `metrics` and `text_metrics` (accuracy, F1, LAMA
ranking, BLEU, ROUGE-L). Import from the modules; this package re-exports nothing, so importing one
of them never loads the rest.
"""
