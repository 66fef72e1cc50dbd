# Kubernetes（k8s/base + k8s/overlays/*、kustomize は kubectl 内蔵のものを使う）

KUBECTL ?= kubectl
OVERLAY ?= minikube
K8S_OVERLAYS := $(sort $(notdir $(patsubst %/kustomization.yaml,%,$(wildcard k8s/overlays/*/kustomization.yaml))))
K8S_OUT ?= build/k8s
K8S_NAMESPACE := model-in-image
K8S_ROLLOUT_TIMEOUT ?= 300s
# minikube image load するイメージ（チュートリアルのタグ。minikube オーバーレイと同じ）
K8S_LOCAL_IMAGE ?= model-in-image-pattern:v1.0
MINIKUBE ?= minikube

.PHONY: k8s-render
k8s-render: ## 全オーバーレイを build/k8s/<overlay>.yaml に描画する（make k8s-render OVERLAY=名前 なら標準出力へ）
ifeq ($(origin OVERLAY),command line)
	$(KUBECTL) kustomize k8s/overlays/$(OVERLAY)
else
	@mkdir -p $(K8S_OUT)
	@for overlay in $(K8S_OVERLAYS); do \
		$(KUBECTL) kustomize k8s/overlays/$$overlay > $(K8S_OUT)/$$overlay.yaml || exit 1; \
		echo "$(K8S_OUT)/$$overlay.yaml: $$(grep -c '^kind:' $(K8S_OUT)/$$overlay.yaml) objects"; \
	done
endif

.PHONY: k8s-load-image
k8s-load-image: ## イメージを minikube に読み込む（先に make image）
	$(MINIKUBE) image load $(K8S_LOCAL_IMAGE)

.PHONY: deploy
deploy: ## OVERLAY（既定 minikube）を kubectl apply し、ロールアウト完了を待つ
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)
	$(KUBECTL) -n $(K8S_NAMESPACE) rollout status deployment/model-in-image --timeout=$(K8S_ROLLOUT_TIMEOUT)

.PHONY: undeploy
undeploy: ## OVERLAY で作ったものを名前空間ごと消す
	$(KUBECTL) delete -k k8s/overlays/$(OVERLAY) --ignore-not-found --wait --timeout=$(K8S_ROLLOUT_TIMEOUT)

.PHONY: test-k8s
test-k8s: install ## マニフェストのオフラインテスト（描画・スキーマ・ポリシー・コードとの整合）
	$(RUN) pytest -m k8s tests/k8s $(PYTEST_ARGS)

.PHONY: checkov
checkov: install ## Checkov（tools/checkov の固定版、ネットワークなし）で全オーバーレイを検査し集計を表示する
	$(RUN) pytest -m k8s tests/k8s/test_checkov.py $(PYTEST_ARGS)

.PHONY: test-e2e-k8s
test-e2e-k8s: export KUBECONFIG ?= $(HOME)/.kube/config
test-e2e-k8s: install ## 実クラスタでの E2E（KUBECONFIG のクラスタ。先に make image）
	MII_E2E_K8S=1 $(RUN) pytest -m e2e_k8s tests/k8s $(PYTEST_ARGS)

# --- リリース：イメージを push し、本番オーバーレイをレジストリのダイジェストで固定する ---
REGISTRY ?=
RELEASE_REPOSITORY ?= model-in-image
RELEASE_TAG ?= $(VERSION)
RELEASE_OVERLAY ?= k8s/overlays/production
RELEASE_REF = $(REGISTRY)/$(RELEASE_REPOSITORY):$(RELEASE_TAG)
# base の Deployment に書いたイメージ名（kustomize の images: が置き換える相手）
K8S_IMAGE_NAME := model-in-image-pattern

.PHONY: release
release: install ## IMAGE を REGISTRY に push し、production をそのダイジェストで固定する（REGISTRY=...）
	@test -n "$(REGISTRY)" || { echo "usage: make release REGISTRY=registry.example.com[/path]" >&2; exit 2; }
	$(DOCKER) tag $(IMAGE) $(RELEASE_REF)
	$(DOCKER) push $(RELEASE_REF)
	@ref=$$($(RUN) python scripts/k8s_set_image.py --digest-of $(RELEASE_REF)) \
		&& $(RUN) python scripts/k8s_set_image.py $(RELEASE_OVERLAY) $(K8S_IMAGE_NAME)=$$ref
