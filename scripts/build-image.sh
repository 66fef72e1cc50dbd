#!/usr/bin/env bash
# make image の本体：ONNX モデル（分類器・回帰・ネットなど。リポジトリの外のファイルでもよい）を
# 焼き込んだイメージを作る。
#   1. モデルカードが無ければ作る（model-in-image card：サーバーの起動と同じ規則で読み込む）
#   2. モデル・ラベル・カードの組を確かめ、イメージに記録する値（ファイル名・モデル名・sha256・
#      クラス・入力幅）を得る（model-in-image card --check）
#   3. ビルドに要るもの（Dockerfile・uv.lock・src・scripts/image）とモデルだけを一時ディレクトリに
#      集めて docker build する。ビルドの中でも同じ検査をもう一度通す
# サーバーが拒むモデルは `model refused: 理由` の 1 行で失敗する。
# ラベルファイルは任意（無ければグラフのクラス名。既定はモデルと同じディレクトリの label.json が
# あればそれ）。POSTPROCESS=softmax|sigmoid はロジットを確率にする（カードに記録する）。
#   MODEL_FILE=path/to/model.onnx LABEL_FILE=path/to/labels.json IMAGE=name:tag bash scripts/build-image.sh
set -euo pipefail

MODEL_FILE="${MODEL_FILE:-models/iris_svc.onnx}"
LABEL_FILE="${LABEL_FILE:-}"
POSTPROCESS="${POSTPROCESS:-}"
CARD_FILE="${CARD_FILE:-$(dirname "$MODEL_FILE")/model_card.json}"
MODEL_SHA256="${MODEL_SHA256:-}"
IMAGE="${IMAGE:-model-in-image-pattern:v1.0}"
BASE_IMAGE="${BASE_IMAGE:-python:3.13-slim}"
VERSION="${VERSION:-unknown}"
VCS_REF="${VCS_REF:-unknown}"
DOCKER="${DOCKER:-docker}"
DOCKER_NETWORK="${DOCKER_NETWORK:-}"
# ホストの model-in-image（make image は `uv run --frozen model-in-image` を渡す）
read -r -a MII <<<"${MII:-model-in-image}"

log() { echo "[image] $*" >&2; }
fail() { echo "[image] $*" >&2; exit 1; }

[[ -f "$MODEL_FILE" ]] || fail "model file not found: $MODEL_FILE"
if [[ -n "$LABEL_FILE" ]]; then
  [[ -f "$LABEL_FILE" ]] || fail "label file not found: $LABEL_FILE"
elif [[ -f "$(dirname "$MODEL_FILE")/label.json" ]]; then
  LABEL_FILE="$(dirname "$MODEL_FILE")/label.json"
fi
model_name=$(basename "$MODEL_FILE")
# Dockerfile の COPY と環境変数にそのまま使うので、ファイル名は英数字と . _ - だけ
[[ "$model_name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  fail "model file name must use letters, digits, '.', '_' and '-' only: $model_name"

repo=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(mktemp -d "${TMPDIR:-/tmp}/model-in-image-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

mkdir -p "$ctx/models" "$ctx/scripts"
install -m 0644 "$MODEL_FILE" "$ctx/models/$model_name"
labels=()
image_labels=""
if [[ -n "$LABEL_FILE" ]]; then
  install -m 0644 "$LABEL_FILE" "$ctx/models/label.json"
  labels=(--labels "$ctx/models/label.json")
  image_labels=/model_in_image_pattern/models/label.json
else
  log "no label file: class names come from the model itself"
fi
if [[ -f "$CARD_FILE" ]]; then
  install -m 0644 "$CARD_FILE" "$ctx/models/model_card.json"
else
  log "no model card at $CARD_FILE: creating one (model-in-image card)"
  "${MII[@]}" card --model "$ctx/models/$model_name" "${labels[@]}" \
    ${POSTPROCESS:+--postprocess "$POSTPROCESS"} --output "$ctx/models/model_card.json"
  chmod 0644 "$ctx/models/model_card.json"
fi

check=("${MII[@]}" card --check "$ctx/models/model_card.json"
  --model "$ctx/models/$model_name" "${labels[@]}")
[[ -n "$MODEL_SHA256" ]] && check+=(--expect "MODEL_SHA256=$MODEL_SHA256")
[[ -n "$POSTPROCESS" ]] && check+=(--expect "MODEL_POSTPROCESS=$POSTPROCESS")
facts=$("${check[@]}") || exit 1
build_args=()
while IFS= read -r line; do
  build_args+=(--build-arg "$line")
done <<<"$facts"
# numpy を wheel のまま入れる（BLAS なしのソースビルドを省く：速いが 28 MB 大きい）
[[ -n "${NUMPY_BLAS:-}" ]] && build_args+=(--build-arg "NUMPY_BLAS=$NUMPY_BLAS")

cp -a "$repo/Dockerfile" "$repo/pyproject.toml" "$repo/uv.lock" "$repo/README.md" "$ctx/"
cp -a "$repo/src" "$ctx/src"
cp -a "$repo/scripts/image" "$ctx/scripts/image"
printf '**/__pycache__\n**/*.py[co]\n' >"$ctx/.dockerignore"

network=()
[[ -n "$DOCKER_NETWORK" ]] && network=(--network "$DOCKER_NETWORK")
log "building $IMAGE from $MODEL_FILE"
set +e
"$DOCKER" build "${network[@]}" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "VERSION=$VERSION" \
  --build-arg "VCS_REF=$VCS_REF" \
  --build-arg "MODEL_LABELS=$image_labels" \
  "${build_args[@]}" \
  -t "$IMAGE" "$ctx" 2>&1 | tee "$ctx/build.log"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  # ビルドの中で拒まれたなら、その理由を最後にもう一度 1 行で示す
  # （旧ビルダーは RUN の標準エラーを色付きで出すので、色の制御文字を外して探す）
  sed 's/\x1b\[[0-9;]*m//g' "$ctx/build.log" | grep '^model refused: ' | tail -n1 >&2 || true
  if grep -qiE 'pull access denied|failed to resolve source metadata|dial tcp|no such host|TLS handshake|i/o timeout' "$ctx/build.log" &&
    ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "the base image $BASE_IMAGE cannot be pulled here: build one offline with" \
      "'make base-image-offline' and run 'make image BASE_IMAGE=model-in-image-base:bookworm'"
  fi
  exit "$status"
fi
"$DOCKER" image inspect --format \
  "$IMAGE: {{.Size}} bytes, model {{index .Config.Labels \"io.model-in-image.model.name\"}} sha256 {{index .Config.Labels \"io.model-in-image.model.sha256\"}}" \
  "$IMAGE"
