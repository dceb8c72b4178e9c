#!/usr/bin/env bash
# Exact commands behind the secure-aggregation figures in docs/secure-aggregation.md.
# Machine: the project's 2-vCPU benchmark box (Intel Xeon, 2 MiB L2 per core), Python 3.11,
# cryptography 48, numpy 2.4. Every ratio is against baselines timed in the same process.
# Inputs and dropouts are seeded (--seed 0); keys, shares and masks come from os.urandom.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-results/secagg}"
mkdir -p "$OUT"
B="python experiments/benchmarks/secagg.py"

# 1. Complete graph (Bonawitz et al. 2017), no dropout: server vs plain sum, client vs keystream.
$B --clients 100 --length 1048576 --graph complete --seed 0 --json "$OUT/complete_n100_m2e20.json"
# 2. Complete graph, 10% dropout before the masked input.
$B --clients 100 --length 1048576 --graph complete --dropout 0.1 --seed 0 \
   --json "$OUT/complete_n100_m2e20_d10.json"
# 3. k-regular Harary graph (Bell et al. 2020), default degree, no dropout and 10% dropout.
$B --clients 100 --length 1048576 --graph harary --seed 0 --json "$OUT/harary_n100_m2e20.json"
$B --clients 100 --length 1048576 --graph harary --dropout 0.1 --seed 0 \
   --json "$OUT/harary_n100_m2e20_d10.json"
# 4. 1000 clients with the sparse graph in one process.
$B --clients 1000 --length 262144 --graph harary --dropout 0.1 --seed 0 --protocol-repeats 1 \
   --json "$OUT/harary_n1000_m2e18_d10.json"
# 5. Bonawitz et al.'s setting (2^10 clients, 2^20 entries that sum without wrapping in 26 bits):
#    exact wire bytes per client on the complete graph (too costly to simulate in one process:
#    2^20 X25519 agreements and degree-682 Shamir polynomials) and a real run on the sparse graph.
$B --bytes-only --clients 1024 --length 1048576 --bits 26 --graph complete \
   --json "$OUT/bytes_complete_n1024_m2e20_b26.json"
$B --clients 1024 --length 1048576 --bits 26 --graph harary --seed 0 --protocol-repeats 1 \
   --repeats 2 --json "$OUT/harary_n1024_m2e20_b26.json"
