#!/usr/bin/env bash
# Resets the factory demo's sources and cxd's copies of them, and fills the last two
# weeks again, without starting the processes (`scripts/demo.sh` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/cxd demo --reset-only
