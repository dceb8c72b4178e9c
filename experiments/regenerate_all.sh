#!/usr/bin/env bash
# Regenerate every page of docs/results/, in order, at the current commit. Run it on an idle
# machine from a clean checkout of the final commit: each script refuses to write into
# docs/results/ otherwise (uncommitted changes outside docs/results/, or points computed at
# another commit), and each page names the commit. The pages written earlier in the same
# invocation do not count as changes (privfed.repro.GENERATED_OUTPUTS). Every command resumes
# where it stopped: run the same line again after an interruption. Give a page name to run only
# that page:
#
#   bash experiments/regenerate_all.sh                   # every page, in order
#   bash experiments/regenerate_all.sh algorithms        # one page
#
# Expected durations on 2 cores are extrapolated from scaled-down runs by
# `python experiments/size_pages.py` (CPU time of two short runs per class of points, fitted
# per round and summed over the sweeps' points, divided by 2 cores); they are estimates, not
# measurements of a full regeneration. Figures below: `size_pages.py` on 2026-12-01, 2-vCPU
# Intel Xeon (0.85, 1.44 and 1.54 CPU-hours). Start each page from an empty sweep directory
# (rm -rf sweeps/<name>) so that no point comes from an older commit.
#
# Measured at fd80cf5 (2026-12-02, clean clone, 2 cores, one page at a time): privacy-utility
# 32.8 min; algorithms 15.0 min tuning + 17.3 min final; attacks about 83 min for the membership
# game (its 260 points took 83.0 min in one invocation at be17995), 2.2 min audits, 0.6 min
# inversion, 2.8 min scoring; shakespeare 7.5 min tuning + 35.8 min final.
set -euo pipefail
cd "$(dirname "$0")/.."
only="${1:-all}"
run() {
    local page=$1
    shift
    if [[ "$only" == all || "$only" == "$page" ]]; then
        echo "== $page: $*"
        "$@"
    fi
}

# 1. docs/results/privacy-utility.md: record-level epsilon {1, 4, 8, inf} x Dirichlet alpha
#    {0.1, 1} x {fedavg, fedavg-ft, local} x seeds 0-9, plus non-private FedAvg under secure
#    aggregation (260 points). Expected: ~26 min on 2 cores.
run privacy-utility python experiments/privacy_utility.py \
    --config experiments/configs/privacy_utility.toml --out sweeps/privacy-utility --workers 2

# 2. docs/results/algorithms.md: tuning (experiments/configs/algorithms.toml: 264 points on
#    seeds 100-101), selection on the validation split, then the selected settings on seeds 0-9
#    with FedAvg under secure aggregation and client-level DP (360 points; the generated sweep
#    file is published next to the page). Expected: ~43 min on 2 cores.
run algorithms python experiments/algorithms.py --out sweeps/algorithms --workers 2

# 3. docs/results/attacks.md: the membership-inference game (experiments/configs/membership.toml:
#    65 runs per epsilon {inf, 8, 4, 1}, each the target once with the other 64 as shadow
#    models), one-run audits (experiments/configs/audit.toml, 18 runs) and gradient inversion
#    (experiments/configs/attacks_inversion.toml, 18 one-round runs).
#    Expected: ~46 min on 2 cores.
run attacks python experiments/attacks_vs_privacy.py --out sweeps/attacks --workers 2

# 4. docs/results/shakespeare.md: the LEAF Shakespeare benchmark (experiments/benchmarks/
#    shakespeare.sh has the data step and the smoke version): the private points' learning rate
#    tuned on the validation split (4 x 30 rounds), then 4 points of 150 rounds. Expected: ~75 min
#    on 2 cores (58 min measured for the 4 points at be17995, plus the tuning).
run shakespeare python experiments/benchmarks/shakespeare.py \
    --config experiments/configs/shakespeare.toml --out sweeps/shakespeare/runs --workers 2 \
    --role_seed 0 --min_samples 64 --page docs/results/shakespeare.md

# spot-check determinism of one point of each page
if [[ "$only" == all ]]; then
    for d in sweeps/privacy-utility sweeps/algorithms/final sweeps/attacks/membership; do
        privfed reproduce "$(ls -d "$d"/points/* | head -n 1)" --quiet
    done
fi
