"""教科書の推論クラス：import 時にモデルを読み込み、既定のセッション設定で推論する。"""

import json
from logging import getLogger

import numpy as np
import onnxruntime as rt
from pydantic import BaseModel

from src.configurations import ModelConfigurations

logger = getLogger(__name__)


class Data(BaseModel):
    """入力（省略すると見本の 1 行で推論する：教科書の欠陥のまま）。"""

    data: list[list[float]] = [[5.1, 3.5, 1.4, 0.2]]


class Classifier:
    """ONNX の分類器とラベル。"""

    def __init__(self, model_filepath: str, label_filepath: str):
        self.model_filepath: str = model_filepath
        self.label_filepath: str = label_filepath
        self.classifier = None
        self.label: dict[str, str] = {}
        self.input_name: str = ""
        self.output_name: str = ""

        self.load_model()
        self.load_label()

    def load_model(self):
        logger.info(f"load model in {self.model_filepath}")
        self.classifier = rt.InferenceSession(self.model_filepath)
        self.input_name = self.classifier.get_inputs()[0].name
        self.output_name = self.classifier.get_outputs()[0].name
        logger.info("initialized model")

    def load_label(self):
        logger.info(f"load label in {self.label_filepath}")
        with open(self.label_filepath) as f:
            self.label = json.load(f)
        logger.info(f"label: {self.label}")

    def predict(self, data: list[list[float]]) -> np.ndarray:
        np_data = np.array(data).astype(np.float32)
        prediction = self.classifier.run(None, {self.input_name: np_data})
        # 教科書どおり先頭行の ZipMap（{クラス: 確率}）だけを返す
        first = prediction[1][0]
        # ベンチマーク用の追加：参照モデルが無いとき、自前モデルのテンソル出力も受ける
        values = list(first.values()) if isinstance(first, dict) else first.tolist()
        output = np.array(values)
        logger.info(f"predict proba {output}")
        return output

    def predict_label(self, data: list[list[float]]) -> str:
        prediction = self.predict(data=data)
        argmax = int(np.argmax(np.array(prediction)))
        return self.label[str(argmax)]


classifier = Classifier(
    model_filepath=ModelConfigurations().model_filepath,
    label_filepath=ModelConfigurations().label_filepath,
)
