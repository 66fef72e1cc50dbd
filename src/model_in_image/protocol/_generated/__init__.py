"""grpc_predict_v2.proto から生成したスタブ（make grpc-stubs、手で編集しない）。"""
