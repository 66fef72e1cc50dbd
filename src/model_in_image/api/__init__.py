"""HTTP 層（FastAPI + 高速経路の ASGI ディスパッチャ）。"""
