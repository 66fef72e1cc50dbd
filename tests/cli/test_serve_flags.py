"""serve --model/--labels/--card：環境変数と同じ意味で、WORKERS>1 のワーカーにも届く。"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.fruit import FRUIT_LABELS, FRUIT_SAMPLE, CardModel
from support.servers import LiveServer, running_server

# クラス 1（x > z）になる行
LONG_ROW = [0.9, 0.1, -0.5]


def _get(server: LiveServer, path: str) -> Any:
    with urllib.request.urlopen(f"{server.base_url}{path}", timeout=5) as response:
        return json.loads(response.read())


def _post(server: LiveServer, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{server.base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _assert_serves_fruit(server: LiveServer) -> None:
    metadata = _get(server, "/metadata")
    assert metadata["model_name"] == "fruit"
    assert metadata["labels"] == list(FRUIT_LABELS.values())
    assert metadata["data_sample"] == FRUIT_SAMPLE  # --card（既定の名前ではない）から
    assert _post(server, "/predict/label", {"data": [LONG_ROW]}) == {
        "prediction": FRUIT_LABELS["1"]
    }


@pytest.mark.parametrize("workers", ["1", "2"])
def test_flags_choose_the_model(tmp_path: Path, fruit_model: CardModel, workers: str) -> None:
    """環境変数は同梱の Iris を指したまま：オプションが優先し、ワーカーも同じモデルを読む。"""
    args = (
        "--workers",
        workers,
        "--model",
        str(fruit_model.model),
        "--labels",
        str(fruit_model.labels),
        "--card",
        str(fruit_model.card),
    )
    with running_server(tmp_path, args=args) as server:
        _assert_serves_fruit(server)


def test_environment_still_chooses_the_model(tmp_path: Path, fruit_model: CardModel) -> None:
    env = {
        "MODEL_FILEPATH": str(fruit_model.model),
        "LABEL_FILEPATH": str(fruit_model.labels),
        "MODEL_CARD_FILEPATH": str(fruit_model.card),
        "WORKERS": "2",
    }
    with running_server(tmp_path, env) as server:
        _assert_serves_fruit(server)
