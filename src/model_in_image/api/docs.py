"""オフラインで動く Swagger UI（/docs）と ReDoc（/redoc）。

CDN を使わず、PyPI パッケージ fastapi-offline が同梱する資産（Swagger UI 5 と
redoc.standalone.js）をこのサーバーから配信する。swagger-ui-bundle の Swagger UI 4 は
FastAPI が出力する OpenAPI 3.1 を表示できないので使わない。
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

logger = logging.getLogger(__name__)

ASSETS_URL = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# ページからは自サーバーにしか接続させない（ReDoc のサイドバーは cdn.redoc.ly のロゴ画像を
# 読みに行くが、ここで止まる）。Swagger UI と ReDoc はインラインのスクリプト・スタイルを使う。
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


def asset_dir() -> Path | None:
    """資産のディレクトリ（fastapi-offline が無い・不完全なら None）。import はしない。"""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static"
    return path if all((path / name).is_file() for name in ASSET_FILES) else None


def register_docs(api: FastAPI, assets: Path | None = None) -> None:
    """/docs・/redoc と資産の配信を登録する（FastAPI は docs_url=None, redoc_url=None で作る）。"""
    directory = assets or asset_dir()
    if directory is None:
        logger.warning("API docs disabled: the fastapi-offline package (docs assets) is missing")
        return
    openapi_url = api.openapi_url or "/openapi.json"
    api.mount(ASSETS_URL, StaticFiles(directory=directory), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _restricted(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{api.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                oauth2_redirect_url=None,
                # 外部の検証サービス（validator.swagger.io）に仕様を送らない
                swagger_ui_parameters={**(api.swagger_ui_parameters or {}), "validatorUrl": None},
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _restricted(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{api.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    api.add_route("/docs", swagger_ui, include_in_schema=False)
    api.add_route("/redoc", redoc, include_in_schema=False)


def _restricted(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = CONTENT_SECURITY_POLICY
    return page
