#!/usr/bin/env bash
# Manage a cxd installation from its checkout:
#   scripts/manage.sh start              run `cxd up` in the background (log: $CXD_HOME/cxd.log)
#   scripts/manage.sh stop               stop it and the embedded stores (`cxd down`)
#   scripts/manage.sh status             is it running; datasets, runs and watermarks
#   scripts/manage.sh token ROLE         create a token (read, ingest, analyst, admin)
#   scripts/manage.sh dump FILE          dump sources, saved queries and tokens to FILE
#   scripts/manage.sh restore FILE       restore such a dump
set -euo pipefail
cd "$(dirname "$0")/.."
CXD=${CXD:-.venv/bin/cxd}
HOME_DIR=${CXD_HOME:-.cxd}
cmd=${1:-status}
case "$cmd" in
  start)
    mkdir -p "$HOME_DIR"
    if [ -f "$HOME_DIR/up.pid" ] && kill -0 "$(cat "$HOME_DIR/up.pid")" 2>/dev/null; then
      echo "cxd is already running (pid $(cat "$HOME_DIR/up.pid"))"; exit 0
    fi
    setsid $CXD up >>"$HOME_DIR/cxd.log" 2>&1 < /dev/null &
    for _ in $(seq 1 600); do
      [ -f "$HOME_DIR/up.pid" ] && { echo "cxd started (pid $(cat "$HOME_DIR/up.pid")); log: $HOME_DIR/cxd.log"; exit 0; }
      sleep 0.2
    done
    echo "cxd did not start; see $HOME_DIR/cxd.log" >&2; exit 1 ;;
  stop) $CXD down ;;
  status)
    if [ -f "$HOME_DIR/up.pid" ] && kill -0 "$(cat "$HOME_DIR/up.pid")" 2>/dev/null; then
      echo "cxd is running (pid $(cat "$HOME_DIR/up.pid"))"
    else
      echo "cxd is not running"
    fi
    $CXD status ;;
  token) $CXD token create --role "${2:?usage: manage.sh token ROLE}" ;;
  dump) $CXD metadata dump "${2:?usage: manage.sh dump FILE}" ;;
  restore) $CXD metadata restore "${2:?usage: manage.sh restore FILE}" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
