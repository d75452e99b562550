#!/usr/bin/env bash
# The whole test suite on this machine: installs what it needs, then runs pytest against
# real Postgres and Redis (embedded, or CXD_DATABASE_URL / CXD_REDIS_URL when set).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/batch -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
