"""Open Inference Protocol（V2 REST）：KServe / Triton / MLServer のクライアントと互換。"""
