#!/usr/bin/env bash
# 新しいクローンで空の uv キャッシュから `make run` し、/health が 200 になるまでの秒数と、
# 作られた仮想環境の大きさ（du -sh .venv）を表示する。起動したサーバーはプロセスグループごと止める。
#   bash benchmarks/fresh-make-run.sh [REF] [PORT]      （既定 HEAD、18000。PyPI に届くこと）
# 変更の前後を比べるには REF を変えて続けて実行する（マシンが空いているときに）。
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
ref=${1:-HEAD}
port=${2:-18000}
work=$(mktemp -d "${TMPDIR:-/tmp}/mii-fresh-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
git -C "$work/clone" checkout -q "$(git -C "$repo" rev-parse "$ref")"
export UV_CACHE_DIR="$work/uv-cache"
cd "$work/clone"
start=$(date +%s.%N)
setsid env PORT="$port" make run >"$work/run.log" 2>&1 &
pid=$!
installed=
stopped=
for _ in $(seq 1 2400); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then stopped=1; break; fi
  if [ -z "$installed" ] && grep -q '^Installed [0-9]* packages' "$work/run.log"; then
    installed=$(date +%s.%N)
  fi
  sleep 0.25
done
end=$(date +%s.%N)
kill -TERM -- "-$pid" 2>/dev/null || true
wait "$pid" || true
if [ -n "$stopped" ]; then tail -20 "$work/run.log"; exit 1; fi
echo "ref $(git rev-parse --short HEAD): make run to /health 200 in $(echo "$end - $start" | bc) s" \
  "(packages installed after $(echo "${installed:-$end} - $start" | bc) s)"
echo "serving environment: $(du -sh .venv | cut -f1), $(find .venv/lib -maxdepth 3 -name '*.dist-info' | wc -l) packages"
