"""ヘッドレス Chromium で Swagger UI を操作する：POST /predict/label を試して setosa を見る。

127.0.0.1 以外へのリクエストはすべて止めて記録し、1 件も無いことを確かめる（オフライン動作）。
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from support.browser import CHROMIUM_ARGS
from support.paths import REPO_ROOT
from support.servers import LiveServer

pytestmark = pytest.mark.browser

SCREENSHOT = REPO_ROOT / "artifacts" / "swagger-predict-label.png"
TIMEOUT_MS = 20_000
LOCAL_HOSTS = {"127.0.0.1"}


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    """Debian の Chromium をヘッドレスで起動する。"""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Offline:
    """127.0.0.1 以外へのリクエストを止めて記録する。"""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def __call__(self, route: Route) -> None:
        """ルートごとに許可か遮断かを決める。"""
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Offline]]:
    """外部通信を遮断・記録するページ。"""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    offline = Offline()
    context.route("**/*", offline)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page(), offline
    finally:
        context.close()


def test_swagger_try_it_out_predict_label(
    docs_server: LiveServer, page: tuple[Page, Offline]
) -> None:
    tab, offline = page
    tab.goto(f"{docs_server.base_url}/docs", wait_until="load")
    operation = tab.locator("#operations-predict-post_predict_label")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    row = operation.locator(".live-responses-table tr.response").first
    expect(row.locator(".response-col_description")).to_contain_text("setosa")
    expect(row.locator(".response-col_status")).to_have_text("200")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)
    assert offline.blocked == []


def test_redoc_renders_offline(docs_server: LiveServer, page: tuple[Page, Offline]) -> None:
    tab, offline = page
    tab.goto(f"{docs_server.base_url}/redoc", wait_until="load")
    tab.get_by_text("/v2/models/{model_name}/infer").first.wait_for(state="attached")
    assert tab.locator("h1").first.inner_text().startswith("model-in-image")
    assert offline.blocked == []
