#!/usr/bin/env bash
# Headline privacy-utility grid (experiments/configs/privacy_utility.toml):
# target epsilon {1, 4, 8, inf} x Dirichlet alpha {0.1, 1.0} x algorithm {fedavg, fedavg-ft,
# local} x seed {0, 1, 2}, plus non-private FedAvg with secure aggregation (seeds 0, 1, 2):
# 78 points, sized for < 2 h on 2 cores. Resumable: run the same command again after a stop.
set -euo pipefail
cd "$(dirname "$0")/../.."

# what experiments/privacy_utility.py runs, as plain CLI commands:
#   privfed sweep experiments/configs/privacy_utility.toml --out sweeps/privacy-utility --workers 2
#   privfed report sweeps/privacy-utility --epsilon inf
python experiments/privacy_utility.py --config experiments/configs/privacy_utility.toml \
    --grid headline --out sweeps/privacy-utility --workers 2

# spot-check determinism of one point
privfed reproduce "$(ls -d sweeps/privacy-utility/points/* | head -n 1)" --quiet
