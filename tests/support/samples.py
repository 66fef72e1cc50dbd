"""テストで使う入力（Iris の 3 品種の代表行とボディ）。"""

from __future__ import annotations

MODEL = "iris_svc"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.3, 2.9, 5.6, 1.8]
SPECIES = [(SETOSA, "setosa"), (VERSICOLOR, "versicolor"), (VIRGINICA, "virginica")]
IRIS_LABELS = {"0": "setosa", "1": "versicolor", "2": "virginica"}
PREDICT_BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
JSON = {"content-type": "application/json"}
V2_INFER = f"/v2/models/{MODEL}/infer"
