"""Open Inference Protocol（V2）の gRPC：HTTP と同じプロセス・同じデータプレーンで動く。"""
