"""ログ設定（TEXT または JSON 1 行 1 オブジェクト。uvicorn のログも同じ形式）。

リクエストの処理中に出たログには、そのリクエストの ID が付く（observability.request_id）。
アクセスログは自前（observability.access_log）なので、uvicorn.access は常に黙らせる。
"""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from model_in_image.settings import LogFormat, LogLevel

_TEXT = "%(asctime)s %(levelname)s [%(name)s]%(request_tag)s %(message)s"
_JSON = "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d"
_FILTER = "model_in_image.observability.request_id.RequestIdFilter"


def logging_config(level: LogLevel, fmt: LogFormat, *, stream: str = "stdout") -> dict[str, Any]:
    """logging.config.dictConfig 用の辞書（uvicorn の log_config にも渡す）。"""
    formatter: dict[str, Any]
    if fmt is LogFormat.JSON:
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn が付ける ANSI 色付きの color_message は出さない
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"format": _TEXT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "filters": ["request_id"],
        "stream": f"ext://sys.{stream}",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _FILTER, "text": fmt is LogFormat.TEXT}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.value},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level.value, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level.value, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }
