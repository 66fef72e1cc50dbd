# モデル動物園（issue 21）。Makefile が -include する。
#
# 実際のフレームワークで小さなモデルを学習して書き出し、tests/zoo/models/ に .onnx と .json を書く
# （生成物はコミットする。テストはフレームワークを要らない）。書き出し用の venv は提供用と別
# （.zoo-venv、gitignore）。torch は CPU の wheel（ローカルの wheel があればそれ）を先に入れる。

ZOO_VENV ?= .zoo-venv
ZOO_PYTHON ?= python3
ZOO_TORCH ?= torch==2.13.0
ZOO_PACKAGES ?= scikit-learn==1.9.1 skl2onnx==1.20.0 onnxmltools==1.16.0 lightgbm==4.7.0 \
	xgboost==3.2.0 catboost==1.2.10 onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 \
	numpy==2.4.6 pandas==3.1.1
ZOO_ARGS ?=

$(ZOO_VENV)/.installed: mk/zoo.mk
	$(ZOO_PYTHON) -m venv $(ZOO_VENV)
	$(ZOO_VENV)/bin/pip install --quiet --disable-pip-version-check "$(ZOO_TORCH)"
	$(ZOO_VENV)/bin/pip install --quiet --disable-pip-version-check $(ZOO_PACKAGES)
	@touch $@

.PHONY: zoo
zoo: $(ZOO_VENV)/.installed ## モデル動物園を作り直す（tests/zoo/models、ZOO_ARGS= でケースを絞る）
	cd tests/zoo && PYTHONHASHSEED=0 $(abspath $(ZOO_VENV))/bin/python zoo_build.py $(ZOO_ARGS)
