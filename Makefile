# model-in-image のタスクランナー（README と CI が呼ぶのはここのターゲット）
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv が無ければ PyPI から .tools/ に入れる（新しいマシンでも手作業なし）
UV_VERSION ?= 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen
PYTEST_ARGS ?=

export UV_LINK_MODE ?= copy

.PHONY: help
help: ## ターゲット一覧
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# ターゲットごとに要る依存グループだけを入れる（uv run は足りないものを足すだけで、ほかは消さない）
SERVE_RUN := $(UV) run --frozen --no-default-groups
TRAIN_RUN := $(SERVE_RUN) --group train
BENCH_RUN := $(SERVE_RUN) --group bench
# パッケージに同梱する既定のモデル（models/ が元。make train が両方を書く）
EMBEDDED_MODEL_DIR := src/model_in_image/default_model
MODEL_FILES := iris_svc.onnx label.json model_card.json

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-groups --all-extras
	@touch $@

.PHONY: install
install: .venv/.synced ## 開発・テストの依存関係をすべて uv.lock どおりに入れる

.PHONY: run
run: | $(UV) ## モデルを http://127.0.0.1:8000 で提供する（Docker 不要、提供に要る依存だけを入れる）
	$(SERVE_RUN) model-in-image serve

.PHONY: run-reference
run-reference: | $(UV) ## 教科書のモデル（models/reference）を提供する
	SAMPLE_DATA='[[5.1, 3.5, 1.4, 0.2]]' $(SERVE_RUN) model-in-image serve \
		--model models/reference/iris_svc.onnx --labels models/reference/label.json

.PHONY: train
train: | $(UV) ## Iris SVC を学習して models/ とパッケージ同梱の既定モデルに書き出す（再現可能）
	$(TRAIN_RUN) model-in-image train --output-dir models
	cp $(addprefix models/,$(MODEL_FILES)) $(EMBEDDED_MODEL_DIR)/

.PHONY: lint
lint: install ## ruff（lint と format の確認）
	$(RUN) ruff check .
	$(RUN) ruff format --check .

.PHONY: typecheck
typecheck: install ## mypy --strict
	$(RUN) mypy

.PHONY: format
format: install ## ruff で整形する
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: test
test: lint typecheck ## すべてのテスト（lint・型・ユニット・API・CLI・コンテナ・k8s、カバレッジ 90% 以上）
	$(RUN) pytest --cov --cov-report=term-missing $(PYTEST_ARGS)

.PHONY: clean
clean: ## 生成物を消す
	rm -rf .venv .tools .coverage .coverage.* htmlcov .pytest_cache .mypy_cache .ruff_cache artifacts

-include mk/*.mk
