#!/usr/bin/env bash
# Write a commented one-class plugin and a test that passes as generated:
#   scripts/new-plugin.sh NAME TYPE [--dir FOLDER] [--force]
# TYPE is one of odbc, http, webhook, file, mqtt, python. Files go to CXD_PLUGIN_DIR
# (default ./plugins.d) unless --dir is given. Same as `cxd plugin new NAME --type TYPE`.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NAME TYPE [--dir FOLDER] [--force]   (TYPE: odbc http webhook file mqtt python)" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${CXD:-}" ]; then
  if [ -x "$here/.venv/bin/cxd" ]; then CXD="$here/.venv/bin/cxd"; else CXD=cxd; fi
fi
name=$1
type=$2
shift 2
# $CXD may be a command with arguments (e.g. "python -m cxd.cli"): split it on purpose
# shellcheck disable=SC2086
exec $CXD plugin new "$name" --type "$type" "$@"
