"""下限（floor）：同じモデルを最小限の生 ASGI アプリで提供する。

orjson で解析 → numpy float32 → ONNX Runtime（intra-op 1 スレッド）→ orjson で応答。
検証もエラー処理もしない：HTTP スタックとモデル呼び出しだけのコストを測る基準。

    uvicorn benchmarks.floor_app:create_app --factory --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.onnx_session import open_session

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "iris_svc.onnx"
_HEADERS = [(b"content-type", b"application/json")]
_HEALTH = b'{"health":"ok"}'
_NOT_FOUND = b'{"detail":"Not Found"}'


def create_app(model_path: Path | None = None) -> ASGIApp:
    """下限のアプリを作る（POST /predict と GET /health だけ）。"""
    path = model_path or Path(os.environ.get("FLOOR_MODEL", DEFAULT_MODEL))
    session, input_name, output = open_session(path)
    outputs = [output]

    def predict(body: bytes) -> bytes:
        rows = np.array(orjson.loads(body)["data"], dtype=np.float32)
        (proba,) = session.run(outputs, {input_name: rows})
        payload = proba[0] if len(proba) == 1 else proba
        return b'{"prediction":' + orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY) + b"}"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"] == "/predict":
            message = await receive()
            body = message.get("body", b"")
            while message.get("more_body", False):
                message = await receive()
                body += message.get("body", b"")
            status, payload = 200, predict(body)
        elif scope["path"] == "/health":
            status, payload = 200, _HEALTH
        else:
            status, payload = 404, _NOT_FOUND
        headers = [*_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app
