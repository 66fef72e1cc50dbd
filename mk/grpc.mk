# Open Inference Protocol の gRPC スタブ（issue 14）。Makefile が -include する。
#
# 生成物はコミットする（イメージに grpcio-tools を入れない）。proto を変えたらこれを実行する。
# tests/grpc/test_stubs.py が一時ディレクトリに作り直し、コミットされたものと一致することを確かめる。
# 記述子は既定のプールではなく専用のプールに登録する（sed の行）：tritonclient・KServe・MLServer も
# 同じ `inference` パッケージの型を既定のプールに登録するため、同じプロセスで import すると
# "duplicate symbol" で失敗する。ワイヤー上の名前（/inference.GRPCInferenceService/...）は変わらない。

GRPC_PROTO := src/model_in_image/protocol/_generated/grpc_predict_v2.proto
GRPC_OUT ?= src
# モデルの種類とクラス名を読むための ONNX の部分集合（onnx パッケージを提供用の依存に入れない）
ONNX_SUBSET_PROTO := src/model_in_image/model/_generated/onnx_subset.proto

.PHONY: grpc-stubs
grpc-stubs: install ## gRPC（Open Inference Protocol）のスタブを proto から作り直す
	$(RUN) python -m grpc_tools.protoc -I src --python_out=$(GRPC_OUT) --pyi_out=$(GRPC_OUT) --grpc_python_out=$(GRPC_OUT) $(GRPC_PROTO)
	$(RUN) python -m grpc_tools.protoc -I src --python_out=$(GRPC_OUT) --pyi_out=$(GRPC_OUT) $(ONNX_SUBSET_PROTO)
	sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
		$(GRPC_OUT)/model_in_image/protocol/_generated/grpc_predict_v2_pb2.py \
		$(GRPC_OUT)/model_in_image/model/_generated/onnx_subset_pb2.py
