#!/usr/bin/env bash
# Smoke run of the privacy-utility pipeline (< 3 min on 2 cores): sweep -> results.csv ->
# report -> docs/results/privacy-utility.md. Seeds 0 and 1 (declared in the config).
# The sweep resumes if interrupted: run the same command again.
set -euo pipefail
cd "$(dirname "$0")/../.."

# what experiments/privacy_utility.py runs, as plain CLI commands:
#   privfed sweep experiments/configs/smoke.toml --out sweeps/smoke --workers 2
#   privfed report sweeps/smoke --epsilon inf
python experiments/privacy_utility.py --config experiments/configs/smoke.toml --grid smoke \
    --out sweeps/smoke --workers 2

# re-run one point from its manifest and diff every metric (exit 1 if anything differs)
privfed reproduce "$(ls -d sweeps/smoke/points/* | head -n 1)" --quiet
