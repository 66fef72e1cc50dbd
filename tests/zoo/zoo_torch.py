"""PyTorch のケース（torch.onnx.export：既定の dynamo 書き出しと従来の TorchScript 書き出し）。"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from zoo_common import SEED, Built, case, json_rows, pick_rows, strings
from zoo_sklearn import iris

PACKAGES = ("torch", "onnxscript")


def _train(model: nn.Module, features: torch.Tensor, target: torch.Tensor, steps: int) -> None:
    """小さなネットを全バッチで学習する（CPU・1 スレッド・乱数固定で決定的）。"""
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(model(features), target).backward()
        optimiser.step()


def _setup() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def _mlp(softmax: bool) -> tuple[nn.Module, np.ndarray, list[int]]:
    """Iris の MLP（4 → 16 → 3）。softmax なら学習後に Softmax を付ける。"""
    _setup()
    features, target = iris()
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    _train(net, torch.from_numpy(features), torch.from_numpy(target), 200)
    model = nn.Sequential(net, nn.Softmax(dim=1)) if softmax else net
    model.eval()
    picked = pick_rows(target.tolist())
    return model, features[picked], picked


def _legacy(model: nn.Module, example: torch.Tensor, names: tuple[str, str], **kw: Any) -> bytes:
    """従来の TorchScript 書き出し（dynamo=False）。"""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[names[0]],
            output_names=[names[1]],
            opset_version=17,
            dynamo=False,
            **kw,
        )
    return buffer.getvalue()


def _predict(model: nn.Module, rows: Any) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(rows)).numpy()  # type: ignore[no-any-return]


def _net(name: str, description: str, kind: str, model: bytes, rows: Any, values: Any) -> Built:
    return Built(
        name=name,
        description=description,
        framework="torch",
        exporter="torch.onnx.export",
        packages=PACKAGES,
        kind=kind,
        model=model,
        rows=json_rows(rows) if np.asarray(rows).dtype.kind == "f" else np.asarray(rows).tolist(),
        head="logits" if kind == "logits" else "probabilities",
        prediction=("model(x)", values),
        # クラスの情報の無いネット：名前は列の番号
        classes=strings(range(np.shape(values)[1])),
        labels=("model(x).argmax(1)", np.argmax(values, axis=1)),
    )


@case
def build_torch_mlp_logits() -> Built:
    """ロジットを出す MLP（既定の dynamo 書き出し、バッチは可変）。"""
    model, rows, _ = _mlp(softmax=False)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (torch.from_numpy(rows),),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    assert program is not None
    return _net(
        "torch_mlp_logits",
        "MLP on Iris outputting logits [batch, 3], torch.onnx.export(dynamo=True)",
        "logits",
        program.model_proto.SerializeToString(),
        rows,
        _predict(model, rows),
    )


@case
def build_torch_mlp_softmax() -> Built:
    """softmax の確率を出す MLP（従来の書き出し、dynamic_axes でバッチは可変）。"""
    model, rows, _ = _mlp(softmax=True)
    axes = {"x": {0: "batch"}, "probabilities": {0: "batch"}}
    data = _legacy(model, torch.from_numpy(rows[:1]), ("x", "probabilities"), dynamic_axes=axes)
    return _net(
        "torch_mlp_softmax",
        "MLP on Iris with a Softmax layer [batch, 3], torch.onnx.export(dynamo=False, "
        "dynamic_axes)",
        "probabilities",
        data,
        rows,
        _predict(model, rows),
    )


@case
def build_torch_mlp_fixed_batch() -> Built:
    """dynamic_axes なしで書き出した MLP（入力は [1, 4] に固定、softmax の確率）。"""
    model, rows, _ = _mlp(softmax=True)
    data = _legacy(model, torch.from_numpy(rows[:1]), ("x", "probabilities"))
    return _net(
        "torch_mlp_fixed_batch",
        "MLP on Iris with Softmax, exported without dynamic axes: input fixed at [1, 4]",
        "probabilities",
        data,
        rows,
        _predict(model, rows),
    )


class _Bag(nn.Module):
    """トークン ID [batch, 12] の埋め込みの平均から 3 クラスのロジット。"""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(40, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens).mean(dim=1))  # type: ignore[no-any-return]


@case
def build_torch_embedding() -> Built:
    """int64 のトークン ID [batch, 12] を取る埋め込みのネット（ロジット）。"""
    _setup()
    generator = np.random.default_rng(SEED)
    target = generator.integers(0, 3, 300)
    # クラス c の文は ID が c * 13 から始まる 13 語の範囲に偏る
    tokens = np.where(
        generator.random((300, 12)) < 0.7,
        target[:, None] * 13 + generator.integers(0, 13, (300, 12)),
        generator.integers(0, 40, (300, 12)),
    ).astype(np.int64)
    model = _Bag()
    _train(model, torch.from_numpy(tokens), torch.from_numpy(target), 150)
    model.eval()
    rows = tokens[pick_rows(target.tolist())]
    axes = {"token_ids": {0: "batch"}, "logits": {0: "batch"}}
    data = _legacy(model, torch.from_numpy(rows[:1]), ("token_ids", "logits"), dynamic_axes=axes)
    return _net(
        "torch_embedding",
        "Embedding(40, 8) + mean + Linear(8, 3) over int64 token_ids [batch, 12], logits",
        "logits",
        data,
        rows,
        _predict(model, rows),
    )
