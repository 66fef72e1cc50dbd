"""JSON ボディの厳密な解析（UTF-8・構文・入れ子の深さの誤りを 400 にする共通処理）。"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from model_in_image.errors import ModelServerError

T = TypeVar("T")


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes, *, prefix: str) -> T:
    """body を decoder で解析する。壊れた JSON は「{prefix}: 理由」の 400。

    型の不一致（msgspec.ValidationError）は呼び出し側がプロトコルの形で報告するので通す。
    """
    if not body.isascii():  # msgspec は読み飛ばすキーの値の UTF-8 を確かめない
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise ModelServerError(f"{prefix}: not UTF-8 at byte {exc.start}", 400) from None
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        raise ModelServerError(f"{prefix}: {exc}", 400) from None
    except RecursionError:
        raise ModelServerError(f"{prefix}: nested too deeply", 400) from None
