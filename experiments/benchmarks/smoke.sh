#!/usr/bin/env bash
# Smoke run of the privacy-utility pipeline (a few minutes on 2 cores): sweep -> results.csv ->
# report -> a page in sweeps/smoke/page/ (never docs/results/: smoke numbers are not results).
# Seeds 0 and 1 (declared in the config). Runs on a checkout with uncommitted changes too
# (--allow-dirty), which is why it may not write into docs/results/.
# The sweep resumes if interrupted: run the same command again.
set -euo pipefail
cd "$(dirname "$0")/../.."

# what experiments/privacy_utility.py runs, as plain CLI commands:
#   privfed sweep experiments/configs/smoke.toml --out sweeps/smoke --workers 2
#   privfed report sweeps/smoke --epsilon inf --out sweeps/smoke/report
python experiments/privacy_utility.py --config experiments/configs/smoke.toml --grid smoke \
    --out sweeps/smoke --workers 2 --results sweeps/smoke/page --page privacy-utility-smoke \
    --title "Privacy-utility smoke run (not results)" --allow-dirty

# re-run one point from its manifest and diff every metric (exit 1 if anything differs)
privfed reproduce "$(ls -d sweeps/smoke/points/* | head -n 1)" --quiet
