"""エラー階層（HTTP ステータス付き）。HTTP 層で一か所にまとめて変換する。"""

from __future__ import annotations

from typing import Any


class ModelServerError(Exception):
    """すべてのサーバーエラーの基底（status_code を持つ）。"""

    status_code = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class ModelLoadError(ModelServerError):
    """モデル・ラベル・モデルカードの読み込み失敗（起動を中止する）。"""


class InvalidInputError(ModelServerError):
    """入力が不正（FastAPI と同じ形の 422 detail を持つ）。"""

    status_code = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["msg"] if errors else "invalid input")
        self.errors = errors

    @classmethod
    def single(
        cls, loc: tuple[str | int, ...], msg: str, kind: str = "value_error"
    ) -> InvalidInputError:
        """エラー 1 件の 422 を作る。"""
        return cls([{"type": kind, "loc": list(loc), "msg": msg}])


class PayloadTooLargeError(ModelServerError):
    """ボディが上限を超えた（413）。"""

    status_code = 413


class UnsupportedMediaTypeError(ModelServerError):
    """Content-Type が JSON ではない（415）。"""

    status_code = 415


class NotReadyError(ModelServerError):
    """モデルがまだ（または既に）推論できない状態（503）。"""

    status_code = 503


class OverloadedError(ModelServerError):
    """処理待ちが受け入れの上限に達した（503、Retry-After 付き）。"""

    status_code = 503


class NoClassesError(ModelServerError):
    """クラス名を持たないモデルにラベルを求めた（400。GET /label は 404）。"""

    status_code = 400
