"""E2E 用の負荷クライアント（標準ライブラリだけ。クラスタ内の Pod で python3 -c として動かす）。

1 リクエストごとに新しい接続を張る（Service の振り分けと Endpoints の入れ替えを毎回通す）。
累積の結果を約 1 秒ごとに JSON 1 行で標準出力へ書く：{"ok", "failed", "errors", "done"}。
使い方：python3 load_client.py HOST PORT TOTAL SECONDS（TOTAL=0 は SECONDS まで続ける）
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable

SAMPLES = (
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([5.9, 3.0, 4.2, 1.5], "versicolor"),
    ([6.3, 2.9, 5.6, 1.8], "virginica"),
)
PATH = "/predict/label"
REQUEST_TIMEOUT_S = 5.0
REPORT_EVERY_S = 1.0
PAUSE_S = 0.01
MAX_ERRORS_KEPT = 20


def request_once(host: str, port: int, features: list[float], expected: str) -> str | None:
    """1 回推論する。成功なら None、失敗なら理由。"""
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
    try:
        body = json.dumps({"data": [features]})
        conn.request("POST", PATH, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if response.status != 200:
        return f"HTTP {response.status}: {payload[:200]!r}"
    if json.loads(payload).get("prediction") != expected:
        return f"wrong prediction for {features}: {payload[:200]!r}"
    return None


def run(
    host: str,
    port: int,
    total: int,
    seconds: float,
    report: Callable[[dict[str, object]], None],
) -> dict[str, object]:
    """TOTAL 件（0 なら無制限）か SECONDS 秒のどちらかまで送り、累積結果を返す。"""
    stats: dict[str, object] = {"ok": 0, "failed": 0, "errors": [], "done": False}
    ok = failed = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    last_report = 0.0
    sent = 0
    while (total == 0 or sent < total) and time.monotonic() < deadline:
        features, expected = SAMPLES[sent % len(SAMPLES)]
        error = request_once(host, port, features, expected)
        sent += 1
        if error is None:
            ok += 1
        else:
            failed += 1
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(error)
        now = time.monotonic()
        if now - last_report >= REPORT_EVERY_S:
            stats = {"ok": ok, "failed": failed, "errors": errors, "done": False}
            report(stats)
            last_report = now
        time.sleep(PAUSE_S)
    stats = {"ok": ok, "failed": failed, "errors": errors, "done": True}
    report(stats)
    return stats


def _print(stats: dict[str, object]) -> None:
    print(json.dumps(stats), flush=True)


def main(argv: list[str]) -> int:
    """コマンドライン：HOST PORT TOTAL SECONDS。失敗が 1 件でもあれば 1 を返す。"""
    host, port, total, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    stats = run(host, port, total, seconds, _print)
    return 0 if stats["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
