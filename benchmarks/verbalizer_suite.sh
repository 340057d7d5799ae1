#!/usr/bin/env bash
# Verbalizer search on 16-shot SST-2 and TREC, data seeds 13/21/42, each method, smollm2-135m.
# Writes benchmarks/results/verbalizer_<task>_method-<m>.json (manual vs found test score, words, time).
set -euo pipefail
cd "$(dirname "$0")/.."
for task in sst2 trec; do
  for method in likelihood probe petal; do
    python benchmarks/strategy_seeds.py --task "$task" --strategy verbalizer --param "method=$method" --seeds 13,21,42
  done
done
