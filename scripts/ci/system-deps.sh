#!/usr/bin/env bash
# CI とテストが必要とする Debian パッケージを入れる（既にあれば何もしない）。
set -euo pipefail
PACKAGES=(docker.io debootstrap wrk chromium curl ca-certificates python3-venv)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all present: ${PACKAGES[*]}"
fi
