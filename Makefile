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

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-groups
	@touch $@

.PHONY: install
install: .venv/.synced ## 依存関係を uv.lock どおりに入れる

.PHONY: run
run: install ## モデルを http://127.0.0.1:8000 で提供する（Docker 不要）
	$(RUN) model-in-image serve

.PHONY: run-reference
run-reference: install ## 教科書のモデル（../shared/reference）を提供する
	MODEL_FILEPATH=../shared/reference/iris_svc.onnx LABEL_FILEPATH=../shared/reference/label.json \
	SAMPLE_DATA='[[5.1, 3.5, 1.4, 0.2]]' $(RUN) model-in-image serve

.PHONY: train
train: install ## Iris SVC を学習して models/ に書き出す（再現可能）
	$(RUN) model-in-image train --output-dir models

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
