#!/usr/bin/env bash
# Multi-task / personalized algorithms on the bundled tasks (experiments/configs/algorithms.toml):
# algorithm {fedavg, fedavg-ft, fedprox, fedper, fedrep, ditto, local} x Dirichlet alpha
# {0.1, 1.0} x record-level epsilon {4, inf}, seeds {0, 1, 2}, 20 rounds, plus FedAvg under secure
# aggregation and FedAvg with client-level DP (central epsilon 2 and 8; distributed discrete
# Gaussian through secure aggregation, epsilon 8): 108 points, ~15 min on
# 2 cores. Resumable: run the same command again after a stop.
set -euo pipefail
cd "$(dirname "$0")/../.."

#   privfed sweep experiments/configs/algorithms.toml --out sweeps/algorithms --workers 2
#   privfed report sweeps/algorithms --epsilon 4
python experiments/privacy_utility.py --config experiments/configs/algorithms.toml \
    --grid algorithms --out sweeps/algorithms --workers 2 --epsilon 4 \
    --page algorithms --title "Multi-task and personalized algorithms" \
    --commands experiments/benchmarks/algorithms.sh
