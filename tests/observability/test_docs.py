"""章のアラートルールと docs/grafana-dashboard.json は、サーバーが出すメトリクスだけを使う。"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from model_in_image.card import create_card, write_card
from model_in_image.observability.prediction_log import StreamSink
from support.iris import training_rows
from support.paths import REPO_ROOT
from support.regressors import linear_regression, normal_rows
from support.samples import JSON

from .conftest import Observe

CHAPTER = REPO_ROOT / "docs" / "observability.md"
DASHBOARD = REPO_ROOT / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bmodel_[a-z_]+")
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)


@pytest.fixture
def exposed(observe: Observe, tmp_path: Path) -> set[str]:
    """推論と予測ログを 1 回ずつ通した後の /metrics のサンプル名（Iris の分類器と回帰モデル）。"""
    observed = observe(drift_window_rows=10, prediction_log_sample_rate=1.0)
    log = observed.app.observability.prediction_log
    assert log is not None
    log.sink = StreamSink(io.BytesIO())
    body = json.dumps({"data": training_rows(10).tolist()})
    assert observed.client.post("/predict", content=body, headers=JSON).status_code == 200
    return sample_names(observed.metrics()) | regressor_metrics(observe, tmp_path)


def regressor_metrics(observe: Observe, directory: Path) -> set[str]:
    """予測の参照分布のあるカードの回帰モデルの /metrics のサンプル名。"""
    regressor = linear_regression(directory, rows=200)
    card = create_card(regressor.model, None, reference=regressor.reference)
    write_card(card, regressor.model.with_name("model_card.json"), force=True)
    observed = observe(model_filepath=regressor.model, label_filepath=None, drift_window_rows=10)
    body = json.dumps({"data": normal_rows(10, seed=1).tolist()})
    assert observed.client.post("/predict", content=body, headers=JSON).status_code == 200
    return sample_names(observed.metrics())


def sample_names(text: str) -> set[str]:
    """/metrics のテキストのサンプル名。"""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def alert_rules() -> list[dict[str, Any]]:
    """章の YAML（Prometheus のルール）。"""
    (block,) = YAML_BLOCK.findall(CHAPTER.read_text(encoding="utf-8"))
    groups = yaml.safe_load(block)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """ダッシュボードのすべてのクエリ。"""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_alert_rules_use_exposed_metrics(exposed: set[str]) -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "ModelFeatureDriftHigh",
        "ModelInputOutOfRange",
        "ModelPredictionDriftHigh",
    }
    for rule in rules:
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule
        assert used <= exposed, (rule["alert"], used - exposed)
    thresholds = {rule["alert"]: rule["expr"] for rule in rules}
    assert thresholds["ModelFeatureDriftHigh"].endswith("> 0.25")
    assert thresholds["ModelFeatureDriftModerate"].endswith("> 0.1")
    assert thresholds["ModelPredictionDriftHigh"].endswith("> 0.25")


def test_dashboard_uses_exposed_metrics(exposed: set[str]) -> None:
    queries = dashboard_queries()
    used = {name for query in queries for name in METRIC.findall(query)}
    assert "model_feature_drift_psi" in used
    assert used <= exposed, used - exposed
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    psi = next(p for p in panels if "model_feature_drift_psi" in json.dumps(p.get("targets")))
    steps = psi["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, 0.1, 0.25]
