"""ログ設定：JSON は 1 行 1 オブジェクト（uvicorn のログも同じ形式）。"""

from __future__ import annotations

import json
import logging
import logging.config

import pytest

from model_in_image.logconfig import logging_config
from model_in_image.settings import LogFormat, LogLevel


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_for_uvicorn_logs(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(logging_config(LogLevel.INFO, LogFormat.JSON))
    logger = logging.getLogger("uvicorn.error")
    logger.info("server started")
    logger.warning("second line\nwith a newline")
    logger.debug("hidden at INFO")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert records[0]["message"] == "server started"
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "uvicorn.error"
    assert {"time", "process"} <= set(records[0])
    assert records[1]["message"] == "second line\nwith a newline"


@pytest.mark.usefixtures("restore_logging")
def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(logging_config(LogLevel.WARNING, LogFormat.TEXT))
    logging.getLogger("model_in_image.test").warning("plain %s", "text")
    logging.getLogger("model_in_image.test").info("hidden")
    out = capsys.readouterr().out
    assert out.rstrip().endswith("WARNING [model_in_image.test] plain text")
    assert "hidden" not in out


def test_uvicorn_access_log_stays_silent() -> None:
    """アクセスログはディスパッチャが書く：uvicorn のアクセスログは常に出さない。"""
    config = logging_config(LogLevel.DEBUG, LogFormat.TEXT)
    assert config["loggers"]["uvicorn.access"]["level"] == "WARNING"
    assert config["root"]["level"] == "DEBUG"
    assert config["disable_existing_loggers"] is False
