# Docker イメージ（Model-in-Image：イメージそのものがリリース物）

DOCKER ?= docker
IMAGE ?= model-in-image-pattern:v1.0
# Docker Hub に届かない環境では BASE_IMAGE=model-in-image-base:bookworm（make base-image-offline）
BASE_IMAGE ?= python:3.13-slim
OFFLINE_BASE_IMAGE ?= model-in-image-base:bookworm
MODEL_FILE ?= models/iris_svc.onnx

# 使うときにだけ評価する（= で遅延評価）
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -n1)
VCS_REF ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
MODEL_SHA256 ?= $(shell sha256sum $(MODEL_FILE) | cut -d' ' -f1)
# 既定ブリッジが無いエンジン（dockerd --bridge=none）ではホストのネットワークでビルドする
DOCKER_NETWORK ?= $(shell $(DOCKER) network inspect bridge >/dev/null 2>&1 || echo host)

.PHONY: image
image: ## Docker イメージ model-in-image-pattern:v1.0 を作る（BASE_IMAGE で土台を変更可）
	$(DOCKER) build $(if $(DOCKER_NETWORK),--network $(DOCKER_NETWORK)) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(VERSION) \
		--build-arg VCS_REF=$(VCS_REF) \
		--build-arg MODEL_SHA256=$(MODEL_SHA256) \
		-t $(IMAGE) .
	@$(DOCKER) image inspect --format '$(IMAGE): {{.Size}} bytes, model sha256 {{index .Config.Labels "io.model-in-image.model.sha256"}}' $(IMAGE)

.PHONY: base-image-offline
base-image-offline: ## Debian パッケージだけで Python ベースイメージを作る（Docker Hub 不要、要 root）
	BASE_TAG=$(OFFLINE_BASE_IMAGE) bash scripts/build-offline-base.sh

.PHONY: test-image
test-image: install ## コンテナのテストだけを実行する（先に make image）
	MII_IMAGE=$(IMAGE) $(RUN) pytest -m image tests/image $(PYTEST_ARGS)
