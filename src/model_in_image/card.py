"""持ち込みモデルのモデルカード（`model-in-image card`）と、イメージのビルド時の検査。

カードを作るときも確かめるときも、サーバーの起動と同じ読み込みを通す（作るときは
open_dataplane（load_dataplane と同じ読み込み）、確かめるときは load_dataplane そのもの）。
サーバーが拒むモデルはカードを作れず、イメージのビルドも理由の 1 行で失敗する。
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np

from model_in_image import __version__
from model_in_image.dataplane import DataPlane
from model_in_image.errors import InvalidInputError, ModelLoadError, ModelServerError
from model_in_image.facts import ModelFacts, classes_json
from model_in_image.heldout import heldout_accuracy
from model_in_image.loading import load_dataplane, open_dataplane
from model_in_image.model.kinds import ModelKind, Postprocess
from model_in_image.modelcard import (
    ModelCard,
    PredictionReference,
    prediction_reference,
    prediction_reference_problem,
    reference_statistics,
)
from model_in_image.settings import Settings

# サンプルの行数の上限はサーバーの既定（MAX_REQUEST_ROWS）と同じ
MAX_SAMPLE_ROWS: int = Settings.model_fields["max_request_rows"].default
REFUSED = "model refused: "


class CardInputError(ModelServerError):
    """card コマンドへの入力（サンプル・参照データ・出力先）の誤り。モデルの拒否とは分ける。"""

    status_code = 400


def create_card(
    model: Path,
    labels: Path | None,
    *,
    name: str | None = None,
    sample: list[Any] | None = None,
    reference: Path | None = None,
    postprocess: Postprocess = Postprocess.NONE,
    accuracy: tuple[Path, str] | None = None,
) -> ModelCard:
    """どこかで学習したモデルのカードを作る（サーバーが拒むモデルなら ModelLoadError）。

    サンプルは指定が無ければ参照データの先頭行、それも無ければ 0 の 1 行（どちらもモデルが
    受け付けることをウォームアップで確かめる）。参照データがあれば特徴量ごとの参照分布を付け、
    回帰モデルならその行での予測の参照分布（prediction_reference）も付ける。
    accuracy（検証データの CSV と正解の列）があれば heldout_accuracy を測る。library_versions は
    モデルのファイルに記録された作り手と opset の版。
    """
    probe = open_dataplane(model, labels, name=name or model.stem, postprocess=postprocess)
    facts = ModelFacts.of(probe, name or model.stem)
    width = facts.input_width
    if reference is not None and width is None:
        raise CardInputError(
            "--reference needs a model with one float input [N, width]; this model has "
            + ", ".join(spec.text() for spec in probe.model.signature.inputs)
        )
    data, feature_names = read_reference(reference, width) if reference and width else (None, None)
    if sample is None:
        sample = [data[0].tolist()] if data is not None else probe.sample
    # サーバーの起動と同じウォームアップ：サンプルを検証して推論する
    dataplane = open_dataplane(
        model,
        labels,
        name=facts.name,
        sample=sample,
        max_rows=MAX_SAMPLE_ROWS,
        postprocess=postprocess,
    )
    names = feature_names or [f"x{i}" for i in range(width or 0)]
    measured = heldout_accuracy(dataplane, *accuracy, feature_names) if accuracy else None
    return ModelCard(
        name=facts.name,
        model_file=facts.model_file,
        sha256=facts.sha256,
        input_name=facts.input_name,
        input_dtype=facts.input_dtype,
        input_width=facts.input_width,
        classes=list(facts.classes) if facts.classes is not None else None,
        output_kind=facts.output_kind,
        kind=facts.kind,
        inputs=facts.inputs,
        outputs=facts.outputs,
        postprocess=facts.postprocess,
        heldout_accuracy=measured,
        sample_input=dataplane.sample,
        library_versions=dataplane.model.graph.library_versions(),
        feature_names=feature_names,
        reference=reference_statistics(data, names) if data is not None else None,
        prediction_reference=_prediction_reference(dataplane, data),
        validated_with={"model-in-image": __version__, "onnxruntime": version("onnxruntime")},
    )


def _prediction_reference(
    dataplane: DataPlane, data: np.ndarray[Any, Any] | None
) -> PredictionReference | None:
    """回帰モデルの、参照データの行での予測の分布（サーバーと同じ検証と推論、上限の行数ずつ）。"""
    if data is None or dataplane.kind is not ModelKind.REGRESSOR:
        return None
    step = dataplane.limits.max_rows
    parts = []
    for start in range(0, len(data), step):
        chunk = cast("Sequence[Sequence[float]]", data[start : start + step])
        try:
            parts.append(dataplane.predict(dataplane.validate(chunk, loc=())))
        except InvalidInputError as exc:
            line = start + int(exc.errors[0]["loc"][0]) + 1
            raise CardInputError(f"reference data row {line}: {exc.message}") from None
    return prediction_reference(np.concatenate(parts))


def read_reference(path: Path, width: int) -> tuple[np.ndarray[Any, Any], list[str] | None]:
    """参照データの CSV（見出し行は任意）を [N, width] の配列と特徴量名にする。"""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CardInputError(f"cannot read reference data {path}: {exc}") from exc
    header = _header(rows[0]) if rows else None
    if header is not None:
        rows = rows[1:]
    if not rows:
        raise CardInputError(f"reference data {path} has no data rows")
    for i, row in enumerate([header, *rows] if header else rows):
        if len(row) != width:
            raise CardInputError(
                f"reference data {path} line {i + 1} has {len(row)} columns; "
                f"the model expects {width} features"
            )
    try:
        data = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise CardInputError(f"reference data {path}: {exc}") from exc
    if not np.isfinite(data).all():
        raise CardInputError(f"reference data {path} must contain finite numbers only")
    return data, header


def _header(row: list[str]) -> list[str] | None:
    """先頭行が数値の行でなければ見出し（特徴量名）。"""
    try:
        np.array(row, dtype=np.float64)
    except ValueError:
        return [cell.strip() for cell in row]
    return None


def parse_sample(text: str) -> list[Any]:
    """--sample の JSON（SAMPLE_DATA と同じ行のリスト）。行の型と形はモデルが確かめる。

    1 入力のモデルは行がその入力の値（[[5.1, 3.5]]、[["great product"]]）、複数入力のモデルは
    入力名をキーとするオブジェクト（[{"age": 55, "plan": "basic"}]）。
    """
    try:
        rows = msgspec.json.decode(text, type=list[Any])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CardInputError(
            f"--sample must be a JSON list of rows like [[5.1, 3.5]]: {exc}"
        ) from exc
    if not rows or not all(row not in ([], {}) for row in rows):
        raise CardInputError("--sample must have at least one non-empty row")
    return rows


def check_model(
    model: Path, labels: Path | None, card_path: Path, expected: Mapping[str, str] | None = None
) -> ModelFacts:
    """イメージに焼き込む組をサーバーの起動と同じ読み込みで確かめ、記録する値を返す。

    モデルカードはモデルから導いた値（入力幅・クラス・入力名・型・出力形式）と、expected
    （Dockerfile の ARG）は記録する値と一致しなければならない。違えば ModelLoadError。
    後処理はカードに記録したもの（--expect MODEL_POSTPROCESS=... で確かめられる）。
    """
    expected = dict(expected or {})
    settings = Settings(
        model_filepath=model,
        label_filepath=labels,
        model_card_filepath=card_path,
        model_sha256=expected.get("MODEL_SHA256") or None,
        model_name=None,
        sample_data=None,
        model_postprocess=_card_postprocess(card_path),
    )
    dataplane = load_dataplane(settings)
    card = dataplane.card
    if card is None:  # pragma: no cover - model_card_filepath を渡したので必ずある
        raise ModelLoadError(f"model card not found: {card_path}")
    facts = ModelFacts.of(dataplane, card.name)
    _check_card(card, facts)
    if card.prediction_reference is not None:
        problem = prediction_reference_problem(
            card.prediction_reference, facts.kind, dataplane.sample_values
        )
        if problem is not None:
            raise ModelLoadError(problem)
    _check_expected(expected, facts)
    return facts


def _card_postprocess(card_path: Path) -> Postprocess:
    """カードに記録した後処理（カードが読めなければ none。読めない理由は読み込みが示す）。"""
    try:
        return Postprocess(ModelCard.read(card_path).postprocess or Postprocess.NONE)
    except (ModelLoadError, ValueError):
        return Postprocess.NONE


def _check_card(card: ModelCard, facts: ModelFacts) -> None:
    claims: dict[str, tuple[object, object]] = {
        "input_width": (card.input_width, facts.input_width),
        "classes": (card.classes, list(facts.classes) if facts.classes is not None else None),
        "kind": (card.kind, facts.kind),
        "input_name": (card.input_name, facts.input_name),
        "input_dtype": (card.input_dtype, facts.input_dtype),
        "output_kind": (card.output_kind, facts.output_kind),
    }
    for field, (claimed, actual) in claims.items():
        if claimed is not None and claimed != actual:
            raise ModelLoadError(
                f"model card {field} is {claimed!r} but the model and labels give {actual!r}"
            )


def _check_expected(expected: Mapping[str, str], facts: ModelFacts) -> None:
    actual = facts.build_args()
    for key, value in expected.items():
        if key not in actual:
            raise CardInputError(f"unknown build argument {key} (known: {', '.join(actual)})")
        if _normalise(key, value) != actual[key]:
            raise ModelLoadError(
                f"build argument {key}={value} does not match the model ({actual[key]})"
            )


def _normalise(key: str, value: str) -> str:
    """クラスは JSON として、入力幅は整数として比べる（書き方の違いは許す）。"""
    try:
        if key == "MODEL_CLASSES":
            return classes_json(json.loads(value))
        if key == "MODEL_INPUT_WIDTH":
            return str(int(value))
    except (ValueError, TypeError):
        return value
    return value.lower() if key == "MODEL_SHA256" else value


def write_card(card: ModelCard, output: Path, *, force: bool) -> None:
    """カードを書き出す（既存のファイルは force のときだけ上書き）。"""
    if output.exists() and not force:
        raise CardInputError(f"{output} exists: pass --force to overwrite it")
    try:
        card.write(output)
    except OSError as exc:
        raise CardInputError(f"cannot write {output}: {exc}") from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`card` サブコマンドの引数。"""
    card = sub.add_parser("card", help="どこかで学習したモデルのモデルカードを作る・確かめる")
    card.add_argument("--model", type=Path, required=True, help="ONNX モデル")
    card.add_argument(
        "--labels",
        type=Path,
        help='ラベル（{"0": "名前", ...}。省略するとグラフのクラス名、クラスの無いモデルは不要）',
    )
    card.add_argument(
        "--postprocess",
        type=Postprocess,
        choices=list(Postprocess),
        default=Postprocess.NONE,
        help="ロジットを確率にする後処理（カードに記録し、イメージはそれで起動する）",
    )
    card.add_argument("--sample", help="サンプル入力の JSON（例 [[5.1, 3.5, 1.4, 0.2]]）")
    card.add_argument("--reference", type=Path, help="参照データの CSV（特徴量ごとの参照分布）")
    card.add_argument("--name", help="モデル名（既定はモデルファイル名の stem）")
    card.add_argument(
        "--accuracy-csv",
        type=Path,
        metavar="FILE",
        help="ラベル付きの検証データの CSV（見出し行つき）。正解率を heldout_accuracy に書く",
    )
    card.add_argument(
        "--target",
        metavar="COLUMN",
        help="--accuracy-csv の正解の列（クラス名・クラスのコード）",
    )
    card.add_argument(
        "--output",
        type=Path,
        help="書き出し先（既定はモデルと同じ場所の model_card.json、- は標準出力）",
    )
    card.add_argument("--force", action="store_true", help="既存のファイルを上書きする")
    card.add_argument(
        "--check",
        type=Path,
        metavar="CARD",
        help="作らずに、このカードとの組を確かめてビルド引数を出す",
    )
    card.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--check で一致を求める値",
    )


def main(args: argparse.Namespace) -> int:
    """`model-in-image card` の本体。拒否は `model refused: 理由` の 1 行、終了コード 1。"""
    try:
        if args.check is not None:
            facts = check_model(args.model, args.labels, args.check, _expectations(args.expect))
            print(f"model accepted: {_describe(facts)}", file=sys.stderr)
            for key, value in facts.build_args().items():
                print(f"{key}={value}")
            return 0
        sample = parse_sample(args.sample) if args.sample is not None else None
        card = create_card(
            args.model,
            args.labels,
            name=args.name,
            sample=sample,
            reference=args.reference,
            postprocess=args.postprocess,
            accuracy=_accuracy_args(args.accuracy_csv, args.target),
        )
        target = args.output or args.model.with_name("model_card.json")
        if str(target) == "-":
            print(card.to_json())
        else:
            write_card(card, target, force=args.force)
            print(f"wrote {target}: {_describe(card)}", file=sys.stderr)
    except ModelLoadError as exc:
        print(REFUSED + exc.message, file=sys.stderr)
        return 1
    except ModelServerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _accuracy_args(path: Path | None, target: str | None) -> tuple[Path, str] | None:
    """--accuracy-csv と --target は揃って指定する。"""
    if path is None and target is None:
        return None
    if path is None or target is None:
        raise CardInputError("--accuracy-csv FILE and --target COLUMN go together")
    return path, target


def _expectations(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CardInputError(f"--expect takes KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _describe(facts: ModelFacts | ModelCard) -> str:
    """1 行の要約（カードとモデルの値は同じ名前の属性）。"""
    classes = f"{len(facts.classes)} classes" if facts.classes is not None else "no classes"
    if facts.input_width is not None:
        inputs = f"input {facts.input_name} [N, {facts.input_width}] {facts.input_dtype}"
    else:
        inputs = "inputs " + ", ".join(
            f"{i['name']} {i['shape']} {i['element']}" for i in facts.inputs or ()
        )
    kind = facts.kind or "classifier"
    return (
        f"{facts.name} ({facts.model_file}, sha256 {facts.sha256[:12]}..., {kind}, "
        f"{inputs}, {classes}, {facts.output_kind} output)"
    )
