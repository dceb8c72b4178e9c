#!/usr/bin/env bash
# docs/results/privacy-utility.md: the command is in experiments/regenerate_all.sh (one place for
# every page's exact commands and seeds).
set -euo pipefail
exec bash "$(dirname "$0")/../regenerate_all.sh" privacy-utility
