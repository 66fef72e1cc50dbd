"""ルート表：メソッド・パステンプレート・ハンドラ・誤りの形式・ドキュメントを 1 エントリに。

同じ表をディスパッチャ（照合）と FastAPI（OpenAPI とドキュメント）が使う。
メトリクスの route ラベルは常にパステンプレート（有限の種類）。
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from model_in_image.errors import ModelServerError
from model_in_image.transport.http import Request, Response

Handler = Callable[[Request], Awaitable[Response]]
# 誤りをその API の形式の応答にする（シードは {"detail"}、V2 は {"error"}）
ErrorEncoder = Callable[[ModelServerError], Response]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PathParamDoc:
    """パス引数の説明と例（OpenAPI 用）。"""

    description: str
    example: str


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """OpenAPI に載せる説明。"""

    summary: str
    description: str
    tag: str
    operation_id: str
    response_model: type[BaseModel] | None = None
    responses: Mapping[int | str, dict[str, Any]] = field(default_factory=dict)
    openapi_extra: dict[str, Any] | None = None
    path_params: Mapping[str, PathParamDoc] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """ルート 1 つ。path はパステンプレート（{name} がパス引数）で、メトリクスのラベルにもなる。"""

    method: str
    path: str
    handler: Handler
    errors: ErrorEncoder
    doc: RouteDoc
    # 過負荷でも受け入れる（プローブ：安く、応答できなければ Pod が外される・再起動される）
    probe: bool = False

    @property
    def param_names(self) -> list[str]:
        """パス引数の名前（現れる順）。"""
        return _PARAM.findall(self.path)


# ある パスに一致したルート（メソッド → ルート）とパス引数
Match = tuple[Mapping[str, Route], Mapping[str, str]]


class Router:
    """パスを照合する。引数のないパスは辞書で、テンプレートは正規表現で（登録順）。"""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._static: dict[str, dict[str, Route]] = {}
        templates: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            table = templates if route.param_names else self._static
            methods = table.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(f"duplicate route: {route.method} {route.path}")
            methods[route.method] = route
        self._templates = [(_compile(path), methods) for path, methods in templates.items()]

    def match(self, path: str) -> Match | None:
        """パスに一致するルート群とパス引数（無ければ None）。"""
        methods = self._static.get(path)
        if methods is not None:
            return methods, NO_PARAMS
        for pattern, methods in self._templates:
            found = pattern.fullmatch(path)
            if found is not None:
                return methods, found.groupdict()
        return None


def _compile(template: str) -> re.Pattern[str]:
    """/v2/models/{model_name} → 1 セグメントずつ一致する正規表現。"""
    parts = _PARAM.split(template)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(pattern)
