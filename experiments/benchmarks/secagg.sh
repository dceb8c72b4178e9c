#!/usr/bin/env bash
# Exact commands behind the secure-aggregation figures in docs/secure-aggregation.md.
# Run on an idle machine and quote its CPU (the benchmark prints /proc/cpuinfo's model name).
# Every ratio is against baselines timed in the same process (CPU time): the plain float32 sum,
# the server's floor (keystream it must expand + additions it cannot avoid) and a client's bare
# keystream. Each command runs the semi-honest and the malicious setting (--security both).
# Inputs and dropouts are seeded (--seed 0); keys, shares, masks and identities come from
# os.urandom.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-results/secagg}"
mkdir -p "$OUT"
B="python experiments/benchmarks/secagg.py"

# 1. The standard size: complete graph (Bonawitz et al. 2017), 100 clients x 2^20, no dropout.
#    Malicious / semi-honest server time decides the default setting (must stay within 1.5x).
$B --clients 100 --length 1048576 --graph complete --seed 0 --json "$OUT/complete_n100_m2e20.json"
# 2. Complete graph, 10% dropout before the masked input.
$B --clients 100 --length 1048576 --graph complete --dropout 0.1 --seed 0 \
   --json "$OUT/complete_n100_m2e20_d10.json"
# 3. k-regular Harary graph (Bell et al. 2020), computed default degree, 0% and 10% dropout.
$B --clients 100 --length 1048576 --graph harary --seed 0 --json "$OUT/harary_n100_m2e20.json"
$B --clients 100 --length 1048576 --graph harary --dropout 0.1 --seed 0 \
   --json "$OUT/harary_n100_m2e20_d10.json"
# 4. 1000 clients with the sparse graph in one process.
$B --clients 1000 --length 262144 --graph harary --dropout 0.1 --seed 0 --protocol-repeats 1 \
   --json "$OUT/harary_n1000_m2e18_d10.json"
# 5. Bonawitz et al.'s setting (2^10 clients, 2^20 entries that sum without wrapping in 26 bits):
#    exact wire bytes per client on the complete graph in both settings (too costly to simulate
#    in one process) and a real run on the sparse graph.
$B --bytes-only --clients 1024 --length 1048576 --bits 26 --graph complete \
   --json "$OUT/bytes_complete_n1024_m2e20_b26.json"
$B --clients 1024 --length 1048576 --bits 26 --graph harary --seed 0 --protocol-repeats 1 \
   --repeats 2 --json "$OUT/harary_n1024_m2e20_b26.json"
