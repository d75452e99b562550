#!/usr/bin/env bash
# Installs the operating-system packages cxd's full test suite talks to: unixODBC with the
# PostgreSQL, MariaDB and SQLite ODBC drivers (and the sqlite3 shell the ODBC tutorial uses), the Mosquitto MQTT broker, and Chromium for the
# console's browser tests. Needs root and apt (Debian); elsewhere it says what is missing.
set -euo pipefail
packages=(python3-venv unixodbc odbc-postgresql odbc-mariadb libsqliteodbc sqlite3 mosquitto chromium chromium-driver)
packages+=(redis-tools)  # redis-benchmark: the ceiling bench/speed_ingest.py measures against
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]}; install them with apt (as root) for the ODBC, MQTT and browser tests" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the broker is started by the tests on a port of their own, not as a system service
if command -v systemctl >/dev/null && systemctl is-enabled mosquitto >/dev/null 2>&1; then
  true
fi
