"""KServe V1 プロトコル（/v1/models/{name}、/v1/models/{name}:predict）。"""
