"""Model-in-Image パターンの推論サーバー（ONNX Runtime + FastAPI）。"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("model-in-image")
except PackageNotFoundError:  # pragma: no cover - ソースツリーから直接使う場合
    __version__ = "0.0.0"
