"""scikit-learn のケース（skl2onnx で書き出す。利用者がふつうにするとおりの呼び出し）。"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from zoo_common import SEED, Built, case, classifier, f32, json_rows, pick_rows, regressor

SKLEARN = {"framework": "scikit-learn", "exporter": "skl2onnx"}

PACKAGES = ("scikit-learn", "skl2onnx")


def iris() -> tuple[np.ndarray, np.ndarray]:
    """Iris（float32）。"""
    data = load_iris()
    return f32(data.data), data.target


def _classifier(
    name: str, estimator: Any, features: np.ndarray, target: np.ndarray, *, zipmap: bool, **kw: Any
) -> Built:
    """ZipMap あり・なしの分類器 1 つ（入力は float_input [N, 幅]）。"""
    estimator.fit(features, target)
    rows = features[pick_rows(target.tolist())]
    options = None if zipmap else {id(estimator): {"zipmap": False}}
    model = to_onnx(estimator, rows[:1], options=options, target_opset=17)
    return classifier(
        estimator,
        rows,
        model.SerializeToString(),
        name=name,
        head="output_probability" if zipmap else "probabilities",
        label_output="output_label" if zipmap else "label",
        packages=PACKAGES,
        **SKLEARN,
        **kw,
    )


@case
def build_sklearn_logreg_zipmap() -> Built:
    """Iris の LogisticRegression、ZipMap の確率（skl2onnx の既定）。"""
    features, target = iris()
    return _classifier(
        "sklearn_logreg_zipmap",
        LogisticRegression(max_iter=500),
        features,
        target,
        zipmap=True,
        description="LogisticRegression on Iris, skl2onnx default (ZipMap probabilities)",
    )


@case
def build_sklearn_logreg_tensor() -> Built:
    """Iris の LogisticRegression、zipmap=False（確率はテンソル）。"""
    features, target = iris()
    return _classifier(
        "sklearn_logreg_tensor",
        LogisticRegression(max_iter=500),
        features,
        target,
        zipmap=False,
        description="LogisticRegression on Iris, skl2onnx zipmap=False (tensor probabilities)",
    )


@case
def build_sklearn_svc_zipmap() -> Built:
    """Iris の SVC(probability=True)、ZipMap。"""
    features, target = iris()
    return _classifier(
        "sklearn_svc_zipmap",
        SVC(probability=True, random_state=SEED),
        features,
        target,
        zipmap=True,
        description="SVC(probability=True) on Iris, ZipMap probabilities",
    )


@case
def build_sklearn_svc_tensor() -> Built:
    """Iris の SVC(probability=True)、zipmap=False。"""
    features, target = iris()
    return _classifier(
        "sklearn_svc_tensor",
        SVC(probability=True, random_state=SEED),
        features,
        target,
        zipmap=False,
        description="SVC(probability=True) on Iris, zipmap=False",
    )


@case
def build_sklearn_svc_borderline() -> Built:
    """Iris の SVC(probability=True) に、predict と predict_proba の最大が食い違う境界の行を送る。

    SVC の predict（ONNX のラベルの出力も）は決定関数、確率は Platt のスケーリング：境界では
    確率の最大の列と予測したクラスが違う。サーバーのラベルはフレームワークと同じでなければならない。
    """
    features, target = iris()
    estimator = SVC(probability=True, random_state=SEED).fit(features, target)
    rng = np.random.default_rng(SEED)
    pairs = rng.integers(0, len(features), (2, 5000))
    midpoints = f32((features[pairs[0]] + features[pairs[1]]) / 2)
    disagree = estimator.predict(midpoints) != estimator.predict_proba(midpoints).argmax(axis=1)
    rows = np.vstack([features[pick_rows(target.tolist(), 3)], midpoints[disagree][:3]])
    model = to_onnx(estimator, rows[:1], target_opset=17)
    return classifier(
        estimator,
        rows,
        model.SerializeToString(),
        name="sklearn_svc_borderline",
        description="SVC(probability=True) on Iris with rows where predict(X) differs from "
        "argmax(predict_proba(X))",
        head="output_probability",
        label_output="output_label",
        packages=PACKAGES,
        **SKLEARN,
    )


@case
def build_sklearn_string_labels() -> Built:
    """乳がんデータを文字列のクラス（'benign'・'malignant'）で学習した分類器。

    target_names の順は ['malignant', 'benign'] で、classes_（列の順）は ['benign', 'malignant']：
    target_names の順に書いたラベルファイルは名前を入れ替える（起動時に拒否されるべき）。
    """
    data = load_breast_cancer()
    features = f32(data.data[:, :8])
    target = np.asarray(data.target_names)[data.target]
    built = _classifier(
        "sklearn_string_labels",
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        features,
        target,
        zipmap=True,
        description="StandardScaler + LogisticRegression on breast cancer (8 features), "
        "string classes 'benign'/'malignant'",
        notes="target_names order is " + str(list(data.target_names)),
    )
    return built


@case
def build_sklearn_class_codes() -> Built:
    """Wine を整数のクラス 3・7・10 で学習した RandomForest（ZipMap、キーは int64）。"""
    data = load_wine()
    features = f32(data.data)
    target = np.array([3, 7, 10])[data.target]
    return _classifier(
        "sklearn_class_codes",
        RandomForestClassifier(n_estimators=5, max_depth=3, random_state=SEED),
        features,
        target,
        zipmap=True,
        description="RandomForestClassifier on wine with class codes 3/7/10",
    )


def _regressor(name: str, estimator: Any, description: str) -> Built:
    """糖尿病データの回帰（出力 variable [N, 1]）。"""
    data = load_diabetes()
    features = f32(data.data)
    estimator.fit(features, data.target)
    rows = features[:6]
    model = to_onnx(estimator, rows[:1], target_opset=17)
    return regressor(
        estimator,
        rows,
        model.SerializeToString(),
        name=name,
        description=description,
        head="variable",
        packages=PACKAGES,
        **SKLEARN,
    )


@case
def build_sklearn_linear_regression() -> Built:
    """LinearRegression。"""
    return _regressor(
        "sklearn_linear_regression", LinearRegression(), "LinearRegression on diabetes"
    )


@case
def build_sklearn_gbr() -> Built:
    """GradientBoostingRegressor（小さな木）。"""
    return _regressor(
        "sklearn_gbr",
        GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=SEED),
        "GradientBoostingRegressor on diabetes (20 trees, depth 3)",
    )


@case
def build_sklearn_kmeans() -> Built:
    """Iris の KMeans（出力 label [N] と scores [N, 3]：ほかの種類 = tensor）。"""
    features, target = iris()
    kmeans = KMeans(n_clusters=3, n_init=10, random_state=SEED).fit(features)
    rows = features[pick_rows(target.tolist())]
    model = to_onnx(kmeans, rows[:1], target_opset=17)
    return Built(
        name="sklearn_kmeans",
        description="KMeans(3) on Iris: outputs label and scores (distances)",
        packages=PACKAGES,
        kind="tensor",
        **SKLEARN,
        model=model.SerializeToString(),
        rows=json_rows(rows),
        head="label",
        prediction=("predict(X)", kmeans.predict(rows)),
        extra_outputs={"scores": ("transform(X)", kmeans.transform(rows))},
        notes="skl2onnx computes the distances in float32 as sqrt(|x|^2 - 2 x.c + |c|^2): "
        "about 2e-5 from sklearn's float64 transform(X)",
        tolerance=(1e-4, 1e-4),
    )


@case
def build_sklearn_int64_counts() -> Built:
    """数え上げの特徴（int64 の入力 counts [N, 6]）の LogisticRegression。"""
    rng = np.random.default_rng(SEED)
    counts = rng.poisson(3.0, size=(200, 6)).astype(np.int64)
    target = (counts[:, 0] + counts[:, 1] > counts[:, 2] + counts[:, 3]).astype(np.int64)
    estimator = LogisticRegression(max_iter=500).fit(counts, target)
    rows = counts[pick_rows(target.tolist())]
    model = to_onnx(
        estimator,
        initial_types=[("counts", Int64TensorType([None, 6]))],
        options={id(estimator): {"zipmap": False}},
        target_opset=17,
    )
    return classifier(
        estimator,
        rows,
        model.SerializeToString(),
        name="sklearn_int64_counts",
        description="LogisticRegression on int64 count features (input counts [N, 6])",
        head="probabilities",
        label_output="label",
        packages=PACKAGES,
        **SKLEARN,
    )


_GOOD = ["great", "excellent", "love", "perfect", "fast", "works"]
_BAD = ["broken", "terrible", "slow", "refund", "awful", "waste"]
_FILLER = ["product", "the", "it", "delivery", "quality", "item", "really"]


def _reviews(count: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(SEED)
    texts, labels = [], []
    for i in range(count):
        positive = i % 2 == 0
        words = list(rng.choice(_GOOD if positive else _BAD, 2)) + list(rng.choice(_FILLER, 3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("positive" if positive else "negative")
    return texts, labels


@case
def build_sklearn_tfidf_text() -> Built:
    """TfidfVectorizer + LogisticRegression（文字列の入力 text [N, 1]、クラスは文字列）。"""
    texts, labels = _reviews(80)
    vectorizer = TfidfVectorizer()
    pipeline = make_pipeline(vectorizer, LogisticRegression(max_iter=500))
    pipeline.fit(texts, labels)
    samples = ["great product", "broken and slow", "the delivery really works", "awful item"]
    samples += ["perfect quality", "waste of money"]
    # 既定の StringNormalizer はロケール en_US.UTF-8 を要し、それの無いマシン（slim のイメージ）
    # では ONNX Runtime が読み込めない。どこにでもある C.UTF-8 を指定する
    model = to_onnx(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={id(vectorizer): {"locale": "C.UTF-8"}},
        target_opset=17,
    )
    return classifier(
        pipeline,
        samples,
        model.SerializeToString(),
        rows=[[text] for text in samples],
        name="sklearn_tfidf_text",
        description="TfidfVectorizer + LogisticRegression, string input text [N, 1]",
        head="output_probability",
        label_output="output_label",
        packages=PACKAGES,
        notes="exported with options locale='C.UTF-8': skl2onnx's default StringNormalizer "
        "needs the en_US.UTF-8 locale, which slim images lack (ONNX Runtime then fails to load)",
        **SKLEARN,
    )


@case
def build_sklearn_column_transformer() -> Built:
    """ColumnTransformer（age・monthly_spend は実数、plan は文字列：3 つの名前付き入力）。"""
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 300).astype(np.float32),
            "monthly_spend": rng.uniform(5, 120, 300).astype(np.float32),
            "plan": rng.choice(["basic", "plus", "pro"], 300),
        }
    )
    target = ((frame["monthly_spend"] < 30) & (frame["plan"] == "basic")).astype(np.int64)
    target |= (frame["age"] > 70).astype(np.int64)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("numbers", StandardScaler(), ["age", "monthly_spend"]),
                ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ]
        ),
        LogisticRegression(max_iter=500),
    ).fit(frame, target)
    picked = frame.iloc[pick_rows(target.tolist())]
    types = [
        ("age", FloatTensorType([None, 1])),
        ("monthly_spend", FloatTensorType([None, 1])),
        ("plan", StringTensorType([None, 1])),
    ]
    model = to_onnx(pipeline, initial_types=types, target_opset=17)
    rows = [
        {"age": float(r.age), "monthly_spend": float(r.monthly_spend), "plan": str(r.plan)}
        for r in picked.itertuples()
    ]
    return classifier(
        pipeline,
        picked,
        model.SerializeToString(),
        rows=rows,
        name="sklearn_column_transformer",
        description="ColumnTransformer(StandardScaler, OneHotEncoder) + LogisticRegression, "
        "inputs age, monthly_spend (float [N, 1]) and plan (string [N, 1])",
        head="output_probability",
        label_output="output_label",
        packages=(*PACKAGES, "pandas"),
        **SKLEARN,
    )
