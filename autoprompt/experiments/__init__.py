"""Drivers that run many searches: `tune` (optuna studies, one or many workers), `suite` (benchmark
suites as one grid study) and `transfer` (a found prompt scored on another model)."""
