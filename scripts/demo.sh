#!/usr/bin/env bash
# Sets up cxd and runs the demo with embedded Postgres and Redis on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cxd demo
