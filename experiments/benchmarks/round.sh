#!/usr/bin/env bash
# Exact commands behind the round figures in docs/performance.md. Run on an IDLE machine (check
# `uptime`: a load average above the core count makes wall times meaningless; the reports record
# the load before and after). Every workload is seeded (seed = 0 in its config); secure
# aggregation keys and masks come from os.urandom and never change a number.
#   bash experiments/benchmarks/round.sh            (about 25 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-results/perf}"
mkdir -p "$OUT"
B="python experiments/benchmarks/round.py"

# 1. Steady rounds of the quickstart (DP-SGD + secure aggregation, 20 clients) and the peers'
#    two workloads (digits MLP, 100 clients / 10 per round; Synthetic(1,1), 1,000 / 100; no DP)
#    on serial, process (2 workers) and Ray (2 actors); 2 warm-up rounds, 10 measured.
$B --workloads quickstart,digits,synthetic --backends serial,process,ray --workers 2 \
   --warmup 2 --rounds 10 --json "$OUT/rounds.json"
# 2. The quickstart end to end (`privfed run`, evaluation and checkpoints included), serial vs
#    --workers 2 (process) vs Ray; outputs compared byte for byte.
$B --parts end-to-end --backends serial,process,ray --workers 2 \
   --json "$OUT/quickstart_end_to_end.json"
# 3. The scale point: 10,000 clients, 1,000 per round, SecAgg+ (Harary), 20 rounds, process
#    backend with 2 workers; time and driver RSS after every round, flatness judged on the last
#    10 rounds (the first ones grow while clients are seen for the first time).
$B --parts scale --scale-rounds 20 --scale-backend process --workers 2 --json "$OUT/scale.json"
# 4. The same workloads in pfl-research 0.6 and Flower 1.42 (installed into their own venvs).
python experiments/benchmarks/peers/peers.py --venv-dir "${PEERS_VENVS:-/tmp/privfed-peers}" \
   --rounds 12 --warmup 2 --workers 2 --json "$OUT/peers.json"
