#!/usr/bin/env bash
# Docker Hub に届かない環境向け：Debian のパッケージだけで Python のベースイメージを作る。
#   debootstrap --variant=minbase bookworm + python3 python3-venv ca-certificates
#   ビルドホストの CA バンドルを入れる（TLS を中継するプロキシ越しに PyPI へ届くように）
#   docker import で $BASE_TAG（既定 model-in-image-base:bookworm）にする
# 冪等：イメージがあれば何もしない（FORCE=1 で作り直す）。ダウンロードは .cache/ に残す。
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG="${BASE_TAG:-model-in-image-base:bookworm}"
SUITE="${SUITE:-bookworm}"
PACKAGES="${PACKAGES:-python3,python3-venv,ca-certificates}"
CACHE_DIR="${CACHE_DIR:-.cache/offline-base}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
DOCKER="${DOCKER:-docker}"
FORCE="${FORCE:-0}"

log() { echo "[offline-base] $*"; }

# このホストの apt が使うミラー（deb822 形式と従来形式の両方を読む）
host_mirror() {
  local uri
  uri=$(awk -v suite="$SUITE" '
    /^URIs:/ { uris = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = uris }
    /^$/ { uris = "" }
    END { if (found != "") print found }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  if [[ -z "$uri" ]]; then
    uri=$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

[[ -r "$CA_BUNDLE" ]] || { log "CA bundle not found: $CA_BUNDLE" >&2; exit 1; }
# CA バンドルが変わったら（別のプロキシなど）作り直す：その sha256 をラベルとキャッシュ名に使う
CA_SHA=$(sha256sum "$CA_BUNDLE" | cut -d' ' -f1)
CA_LABEL=io.model-in-image.ca-bundle.sha256

if [[ "$FORCE" != 1 ]] && "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
  existing=$("$DOCKER" image inspect --format "{{index .Config.Labels \"$CA_LABEL\"}}" "$BASE_TAG")
  if [[ "$existing" == "$CA_SHA" ]]; then
    log "$BASE_TAG already exists (FORCE=1 to rebuild)"
    exit 0
  fi
  log "$BASE_TAG exists but carries another CA bundle: rebuilding"
fi

if [[ $(id -u) -ne 0 ]]; then
  log "debootstrap needs root: run as root (e.g. sudo -E $0)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { log "debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }

mkdir -p "$CACHE_DIR"
# キャッシュは git に入れない（.cache/ 自身が自分を無視する）
[[ -e .cache/.gitignore ]] || printf '*\n' >.cache/.gitignore

MIRROR="${MIRROR:-$(host_mirror)}"
DEBS="$CACHE_DIR/debs-$SUITE.tgz"
ROOTFS="$CACHE_DIR/rootfs-$SUITE-ca${CA_SHA:0:12}.tar"
[[ "$FORCE" == 1 ]] && rm -f "$DEBS" "$ROOTFS"

if [[ ! -s "$ROOTFS" ]]; then
  if [[ ! -s "$DEBS" ]]; then
    log "downloading $SUITE minbase + $PACKAGES from $MIRROR into $DEBS"
    work=$(mktemp -d)
    debootstrap --variant=minbase --include="$PACKAGES" --make-tarball="$DEBS.part" \
      "$SUITE" "$work" "$MIRROR"
    rm -rf "$work"
    mv "$DEBS.part" "$DEBS"
  else
    log "using cached packages $DEBS"
  fi

  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  log "installing into $root"
  debootstrap --variant=minbase --include="$PACKAGES" --unpack-tarball="$(realpath "$DEBS")" \
    "$SUITE" "$root" "$MIRROR"

  log "adding the build host's CA bundle ($CA_BUNDLE)"
  install -m 0644 "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"

  log "trimming caches, docs and locales"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian

  log "packing $ROOTFS"
  tar --numeric-owner --xattrs -C "$root" -cf "$ROOTFS.part" .
  mv "$ROOTFS.part" "$ROOTFS"
  rm -rf "$root"
  trap - EXIT
else
  log "using cached root filesystem $ROOTFS"
fi

log "importing $ROOTFS as $BASE_TAG"
"$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL $CA_LABEL=$CA_SHA" \
  --message "debootstrap --variant=minbase $SUITE + $PACKAGES ($MIRROR)" \
  "$ROOTFS" "$BASE_TAG" >/dev/null
log "done: $("$DOCKER" image inspect --format '{{.Id}} {{.Size}} bytes' "$BASE_TAG")"
