"""Triton の分類拡張（classification）：出力ごとの上位 k クラスを BYTES で返す。

要求する出力の parameters に classification: k（gRPC は InferParameter の int64_param）があれば、
その出力を行ごとに値の大きい順の上位 k 個にし、"score:index" か "score:index:label" の文字列の
BYTES [N, k] で返す（Triton と同じ）。index はその行の中の列の番号、score は C++ の
std::to_string と同じ小数 6 桁、label はクラス名が分かるときだけ。k がクラス数より大きければ
クラス数まで。同じ値の列は番号の小さい順。

分類できるのはクラスの得点の出力（分類器と確率・ロジットのネットの [N, C]、導いた
probabilities）だけ。ほかの出力・BYTES・1 行に値が 1 つの出力、正の整数でない k は 400。
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Self

import numpy as np

from model_in_image.errors import ModelServerError
from model_in_image.model.onnx_model import Array
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

CLASSIFICATION = "classification"

# (公開名, V2 の型, 形) ：OutputCatalog.entries の 1 つ
Entry = tuple[str, str, list[int]]


class RequestedOutput(tuple[str, bool]):
    """返す出力 1 つ：(名前, バイナリか) の組。分類を求められたら classification に k。

    (名前, バイナリか) の組として読める（既存の呼び出しと比較はそのまま）。
    """

    classification: int | None

    def __new__(cls, name: str, binary: bool, classification: int | None = None) -> Self:
        """組を作り、分類の k を添える。"""
        output = super().__new__(cls, (name, binary))
        output.classification = classification
        return output


def count_of(output: tuple[str, bool]) -> int | None:
    """要求された出力の分類の k（分類を求めていなければ None）。"""
    return output.classification if isinstance(output, RequestedOutput) else None


def _single(shape: Sequence[int]) -> bool:
    """1 行に値が 1 つの形か（[N] か [N, 1]）。"""
    return len(shape) < 2 or shape[-1] == 1


def _bad(message: str) -> ModelServerError:
    return ModelServerError(message, status_code=400)


def parse_count(name: str, value: Any, field: str = "parameters.classification") -> int:
    """parameters の classification の値を k にする（正の整数だけ。field は誤りの文の名前）。"""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(
            f"output {name!r}: {field} must be a positive integer "
            f"(the number of top classes), got {json.dumps(value, default=str)[:40]}"
        )
    return value


def grpc_count(name: str, parameters: Mapping[str, pb.InferParameter]) -> int | None:
    """gRPC の出力の parameters["classification"]（int64_param）を k にする（無ければ None）。"""
    if CLASSIFICATION not in parameters:  # 添字で読むと空の値が足されるので先に確かめる
        return None
    value = parameters[CLASSIFICATION]
    if value.WhichOneof("parameter_choice") != "int64_param":
        raise _bad(
            f"output {name!r}: parameter 'classification' must be an int64_param "
            "(the number of top classes)"
        )
    return parse_count(name, value.int64_param, f"parameter {CLASSIFICATION!r}")


class Classification:
    """モデルの出力のうち分類できるもの（クラスの得点）と、その列のクラス名。"""

    def __init__(
        self,
        entries: Sequence[Entry],
        scores: Collection[str],
        labels: Sequence[str] | None,
        kind: str,
    ) -> None:
        self._entries = {name: (datatype, shape) for name, datatype, shape in entries}
        self._scores = [
            name
            for name, datatype, shape in entries
            if name in scores and datatype != "BYTES" and not _single(shape)
        ]
        self._labels = labels
        self._kind = kind

    def check(self, outputs: Sequence[tuple[str, bool]]) -> None:
        """分類を求められた出力が分類できるか（推論の前に確かめる）。"""
        for output in outputs:
            if count_of(output) is None:
                continue
            name = output[0]
            datatype, shape = self._entries[name]
            if datatype == "BYTES":
                raise _bad(
                    f"output {name!r} is a BYTES tensor: classification needs class scores; "
                    + self._where()
                )
            if _single(shape):
                raise self._single(name)
            if name not in self._scores:
                raise _bad(
                    f"output {name!r} holds no class scores: classification needs a "
                    "class-score output; " + self._where()
                )

    def _where(self) -> str:
        """誤りの文の後半：このモデルで分類できる出力。"""
        if not self._scores:
            return f"this {self._kind} model has no class-score output"
        names = ", ".join(repr(name) for name in self._scores)
        return f"the class-score outputs of this {self._kind} model are {names}"

    def _single(self, name: str) -> ModelServerError:
        return _bad(
            f"output {name!r} has one value per row: classification needs several class "
            "scores per row; " + self._where()
        )

    def top_k(self, name: str, values: Array, count: int) -> tuple[list[int], list[str]]:
        """行ごとの上位 k クラスの (形 [N, k], "score:index[:label]" の行優先のリスト)。"""
        rows = values.reshape(len(values), -1)
        if rows.shape[1] < 2:
            raise self._single(name)
        k = min(count, rows.shape[1])
        # 値の大きい順（同じ値は列の番号の小さい順：安定な並べ替え）
        order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(rows, order, axis=1).astype(np.float64)
        labels = self._labels
        items: list[str] = []
        for score_row, index_row in zip(scores.tolist(), order.tolist(), strict=True):
            for score, index in zip(score_row, index_row, strict=True):
                text = f"{score:f}:{index}"  # std::to_string(float) と同じ %f
                items.append(f"{text}:{labels[index]}" if labels is not None else text)
        return [len(rows), k], items
