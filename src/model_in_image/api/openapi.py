"""ルート表を FastAPI に登録する（OpenAPI・Swagger UI 用）。ハンドラの実行は常にディスパッチャ。

FastAPI は関数のシグネチャからパス引数を文書化するので、ルートごとに引数だけを持つ
エンドポイントを作る。エンドポイントは RouteResponse を返し、その応答がディスパッチャの
handle() をそのまま実行する（FastAPI を経由しても挙動・ステータス・本文は同じ）。
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from starlette.background import BackgroundTask
from starlette.responses import Response as StarletteResponse
from starlette.types import Receive, Scope, Send

from model_in_image.transport.dispatcher import Dispatcher
from model_in_image.transport.routing import Route


class RouteResponse(StarletteResponse):
    """FastAPI のエンドポイントから、ディスパッチャでルートを実行する応答（本文は自分で送る）。"""

    def __init__(self, dispatcher: Dispatcher, route: Route) -> None:
        # Response.__init__ は本文を作るので呼ばない（FastAPI が参照する属性だけを持つ）
        self.dispatcher = dispatcher
        self.route = route
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI として応答する。"""
        params = scope.get("path_params", {})
        await self.dispatcher.handle(self.route, params, scope, receive, send)


def register_routes(api: FastAPI, dispatcher: Dispatcher) -> None:
    """ディスパッチャのルート表を FastAPI に登録する（表に 1 度ずつ）。"""
    for route in dispatcher.router.routes:
        doc = route.doc
        api.add_api_route(
            route.path,
            _endpoint(dispatcher, route),
            methods=[route.method],
            summary=doc.summary,
            description=doc.description,
            response_model=doc.response_model,
            responses=dict(doc.responses),
            tags=[doc.tag],
            operation_id=doc.operation_id,
            openapi_extra=doc.openapi_extra,
        )


def _endpoint(dispatcher: Dispatcher, route: Route) -> Any:
    """パス引数だけをシグネチャに持つエンドポイント。"""

    async def endpoint(**_: str) -> StarletteResponse:
        return RouteResponse(dispatcher, route)

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=PathParam(
                description=route.doc.path_params[name].description,
                openapi_examples={"example": {"value": route.doc.path_params[name].example}},
            ),
            annotation=str,
        )
        for name in route.param_names
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = route.doc.operation_id
    return endpoint


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic の $defs 参照を展開する（openapi_extra に埋め込むため）。"""
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result
