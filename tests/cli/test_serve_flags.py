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


ZOO_LOGITS = Path(__file__).resolve().parents[1] / "zoo" / "models" / "torch_mlp_logits.onnx"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_postprocess_flag_turns_logits_into_probabilities(tmp_path: Path, workers: str) -> None:
    """serve --postprocess softmax：MODEL_POSTPROCESS と同じ意味で、ワーカーにも届く。"""
    args = ("--workers", workers, "--model", str(ZOO_LOGITS), "--postprocess", "softmax")
    with running_server(tmp_path, args=args) as server:
        assert _get(server, "/metadata")["postprocess"] == "softmax"
        rows = _post(server, "/predict", {"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
        for row in rows["prediction"]:
            assert all(0.0 <= value <= 1.0 for value in row)
            assert sum(row) == pytest.approx(1.0, abs=1e-5)


def test_postprocess_flag_rejects_an_unknown_value(capsys: pytest.CaptureFixture[str]) -> None:
    """--postprocess の値は softmax・sigmoid・none だけ（使い方の誤り：終了コード 2）。"""
    from model_in_image.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["serve", "--postprocess", "argmax"])
    assert raised.value.code == 2
    assert "argmax" in capsys.readouterr().err
