#!/usr/bin/env bash
# CI 用の Docker エンジン：応答するエンジンが無ければ dockerd をブリッジ無しで起動し、
# オフラインのベースイメージとアプリのイメージを作る。止めるのは docker-down.sh。
# ブリッジが無いので docker build / docker run はすべて --network host を使う。
set -euo pipefail
cd "$(dirname "$0")/../.."

STATE_DIR="${MII_DOCKERD_DIR:-${TMPDIR:-/tmp}/model-in-image-dockerd}"
PID_FILE="$STATE_DIR/dockerd.pid"
LOG_FILE="$STATE_DIR/dockerd.log"
READY_TIMEOUT="${MII_DOCKERD_TIMEOUT:-60}"
OFFLINE_BASE="${OFFLINE_BASE:-model-in-image-base:bookworm}"

log() { echo "[docker-up] $*"; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if engine_answers; then
  log "a Docker engine already answers: $(docker version --format 'server {{.Server.Version}}')"
else
  command -v dockerd >/dev/null || { log "dockerd not found (apt-get install docker.io)" >&2; exit 1; }
  mkdir -p "$STATE_DIR"
  if [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    log "dockerd $(cat "$PID_FILE") is running but does not answer yet"
  else
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "starting: dockerd --bridge=none --iptables=false (log: $LOG_FILE)"
    # setsid：CI のプロセスグループへのシグナルで巻き添えにしない（止めるのは docker-down.sh）
    $SUDO setsid dockerd --bridge=none --iptables=false --ip6tables=false \
      --pidfile "$STATE_DIR/dockerd.own.pid" >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
  fi
  deadline=$((SECONDS + READY_TIMEOUT))
  until engine_answers; do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "dockerd exited; last lines of $LOG_FILE:" >&2
      tail -n 30 "$LOG_FILE" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "dockerd did not answer within ${READY_TIMEOUT}s; last lines of $LOG_FILE:" >&2
      tail -n 30 "$LOG_FILE" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "ready: $(docker version --format 'server {{.Server.Version}}') (pid $(cat "$PID_FILE"))"
fi

log "offline base image $OFFLINE_BASE"
BASE_TAG="$OFFLINE_BASE" bash scripts/build-offline-base.sh

log "application image: make image BASE_IMAGE=$OFFLINE_BASE"
start=$SECONDS
make --no-print-directory image BASE_IMAGE="$OFFLINE_BASE"
log "image built in $((SECONDS - start))s"
