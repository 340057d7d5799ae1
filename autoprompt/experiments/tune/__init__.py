"""Hyper-parameter tuning of a strategy with optuna, on one or many workers and machines.

Each trial is one normal search per data seed (artifacts, a leaderboard row each) with the
strategy's parameters drawn from a search space (the strategy's ``search_space``, or a TOML file).
A trial's value is the **dev** score, averaged over the data seeds; test scores are recorded as
trial attributes, never optimised. The best-so-far dev score is reported to optuna after every
search step, so a median or successive-halving pruner stops hopeless trials early.

The study lives in optuna's RDB storage: a SQLite file by default, any storage URL otherwise
(``postgresql://...`` for several machines). Workers heartbeat; a worker killed mid-trial leaves
its trial RUNNING until another worker's stale-trial check marks it FAILED, and the failed trial
is retried once with the same parameters. Workers on one study stop once it has ``n_trials``
complete or pruned trials; a trial started while that many are already done or running is
marked FAILED as surplus (so the count is exact however many workers race).

    config.py   TuneConfig, search spaces (a strategy's own, or TOML), seeds, storage
    study.py    samplers, pruners, workers, the objective, the summary (the worker machinery it shares
                with suites is `autoprompt.experiments.workers`)
    figures.py  the report section of a study
"""

from autoprompt.experiments.tune.config import (
    TuneConfig,
    default_space,
    grid,
    load_space,
    parse_seeds,
    storage_url,
    suggest,
)
from autoprompt.experiments.tune.figures import study_figures, study_section
from autoprompt.experiments.tune.study import open_study, reproduce_command, summary, tune, worker

__all__ = ["TuneConfig", "default_space", "grid", "load_space", "open_study", "parse_seeds", "reproduce_command",
           "storage_url", "study_figures", "study_section", "suggest", "summary", "tune", "worker"]
