# Docker イメージ（Model-in-Image：イメージそのものがリリース物）

DOCKER ?= docker
IMAGE ?= model-in-image-pattern:v1.0
# Docker Hub に届かない環境では BASE_IMAGE=model-in-image-base:bookworm（make base-image-offline）
BASE_IMAGE ?= python:3.13-slim
OFFLINE_BASE_IMAGE ?= model-in-image-base:bookworm
# 焼き込むモデル（リポジトリの外でもよい）。ラベルとカードの既定はモデルと同じディレクトリの
# label.json と model_card.json（カードが無ければ make image が作る）。MODEL_SHA256 を渡せば照合する
MODEL_FILE ?= models/iris_svc.onnx
LABEL_FILE ?=
# ロジットのネットを確率で提供する後処理（softmax・sigmoid。空なら none）
POSTPROCESS ?=
# none（既定：numpy を BLAS なしでソースからビルド）か wheel（PyPI の wheel のまま、速いが 28 MB 大きい）
NUMPY_BLAS ?=
CARD_FILE ?=
MODEL_SHA256 ?=

# 使うときにだけ評価する（= で遅延評価）
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -n1)
VCS_REF ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
# 既定ブリッジが無いエンジン（dockerd --bridge=none）ではホストのネットワークでビルドする
DOCKER_NETWORK ?= $(shell $(DOCKER) network inspect bridge >/dev/null 2>&1 || echo host)

.PHONY: image
image: install ## イメージを作る（MODEL_FILE= [LABEL_FILE=] [POSTPROCESS=] で持ち込みモデル、IMAGE= でタグ、BASE_IMAGE= で土台）
	@MODEL_FILE="$(MODEL_FILE)" LABEL_FILE="$(LABEL_FILE)" CARD_FILE="$(CARD_FILE)" \
		POSTPROCESS="$(POSTPROCESS)" NUMPY_BLAS="$(NUMPY_BLAS)" \
		MODEL_SHA256="$(MODEL_SHA256)" IMAGE="$(IMAGE)" BASE_IMAGE="$(BASE_IMAGE)" \
		VERSION="$(VERSION)" VCS_REF="$(VCS_REF)" DOCKER="$(DOCKER)" \
		DOCKER_NETWORK="$(DOCKER_NETWORK)" MII="$(RUN) model-in-image" \
		bash scripts/build-image.sh

.PHONY: base-image-offline
base-image-offline: ## Debian パッケージだけで Python ベースイメージを作る（Docker Hub 不要、要 root）
	BASE_TAG=$(OFFLINE_BASE_IMAGE) bash scripts/build-offline-base.sh

.PHONY: test-image
test-image: install ## コンテナのテストだけを実行する（先に make image）
	MII_IMAGE=$(IMAGE) $(RUN) pytest -m image tests/image $(PYTEST_ARGS)
