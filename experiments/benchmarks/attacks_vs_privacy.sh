#!/usr/bin/env bash
# Attacks against privacy (docs/results/attacks.md):
#   membership inference (mia-loss, mia-lira) x epsilon {1, 8, inf} x seeds {0, 1, 2}
#     (experiments/configs/attacks_vs_privacy.toml, base attacks_membership_base.toml)
#   gradient inversion (inversion-inbox, inversion-aggregate) x aggregator {plain, secagg}
#     x epsilon {1, 8, inf} x seeds {0, 1, 2}
#     (experiments/configs/attacks_inversion.toml, base attacks_inversion_base.toml)
# Resumable: run the same command again after a stop.
set -euo pipefail
cd "$(dirname "$0")/../.."

#   privfed sweep experiments/configs/attacks_vs_privacy.toml --out sweeps/attacks-vs-privacy --workers 2
#   privfed sweep experiments/configs/attacks_inversion.toml --out sweeps/attacks-inversion --workers 2
python experiments/attacks_vs_privacy.py --out sweeps --workers 2
