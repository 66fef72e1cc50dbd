#!/usr/bin/env bash
# docker-up.sh が起動した dockerd だけを止める（記録した PID に SIGTERM、上限つきで待つ）。
# 既に動いていたエンジンや、他の人が起動した dockerd には触らない。
set -euo pipefail

STATE_DIR="${MII_DOCKERD_DIR:-${TMPDIR:-/tmp}/model-in-image-dockerd}"
PID_FILE="$STATE_DIR/dockerd.pid"
STOP_TIMEOUT="${MII_DOCKERD_STOP_TIMEOUT:-30}"

log() { echo "[docker-down] $*"; }

if [[ ! -s "$PID_FILE" ]]; then
  log "no dockerd started by docker-up.sh (no $PID_FILE): nothing to stop"
  exit 0
fi
pid=$(cat "$PID_FILE")
# PID が再利用されていないこと（今も dockerd であること）を確かめてから送る
if ! kill -0 "$pid" 2>/dev/null || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q dockerd; then
  log "dockerd $pid is not running any more"
  rm -f "$PID_FILE"
  exit 0
fi

log "stopping dockerd $pid (SIGTERM, up to ${STOP_TIMEOUT}s)"
kill -TERM "$pid"
deadline=$((SECONDS + STOP_TIMEOUT))
while kill -0 "$pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    log "dockerd $pid still running after ${STOP_TIMEOUT}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 0.5
done
rm -f "$PID_FILE"
log "stopped"
