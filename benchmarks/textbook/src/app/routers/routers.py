"""教科書のルート：同期 def（スレッドプールを経由する）と pydantic の入力モデル。"""

from logging import getLogger

from fastapi import APIRouter

from src.ml.prediction import Data, classifier

logger = getLogger(__name__)
router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    return {"health": "ok"}


@router.get("/metadata")
def metadata():
    # 教科書どおりの固定値
    return {
        "data_type": "float32",
        "data_structure": "(1,4)",
        "data_sample": Data().data,
        "prediction_type": "float32",
        "prediction_structure": "(1,3)",
        "prediction_sample": [0.97093159, 0.01558308, 0.01348537],
    }


@router.get("/label")
def label():
    return classifier.label


@router.get("/predict/test")
def predict_test() -> dict[str, list[float]]:
    prediction = classifier.predict(data=Data().data)
    return {"prediction": list(prediction)}


@router.get("/predict/test/label")
def predict_test_label() -> dict[str, str]:
    prediction = classifier.predict_label(data=Data().data)
    return {"prediction": prediction}


@router.post("/predict")
def predict(data: Data) -> dict[str, list[float]]:
    prediction = classifier.predict(data.data)
    return {"prediction": list(prediction)}


@router.post("/predict/label")
def predict_label(data: Data) -> dict[str, str]:
    prediction = classifier.predict_label(data.data)
    return {"prediction": prediction}
