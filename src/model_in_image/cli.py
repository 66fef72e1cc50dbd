"""コマンドライン：model-in-image serve | train | predict | info | card。"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import logging.config
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from model_in_image import __version__, card
from model_in_image.codecs.seed import encode_metadata
from model_in_image.dataplane import DataPlane, load_dataplane
from model_in_image.errors import ModelServerError
from model_in_image.logconfig import logging_config
from model_in_image.sbom import sbom_summary
from model_in_image.settings import Settings

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-in-image", description="Model-in-Image 推論サーバー"
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="REST API を起動する（環境変数 HOST/PORT/WORKERS と同じ）")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)

    train = sub.add_parser("train", help="Iris SVC を学習して ONNX を書き出す")
    train.add_argument("--output-dir", type=Path, default=Path("models"))
    train.add_argument("--seed", type=int, default=42)

    predict = sub.add_parser("predict", help="ファイルまたは標準入力の行をオフラインで推論する")
    predict.add_argument(
        "input", nargs="?", default="-", help="JSON か CSV のファイル（- は標準入力）"
    )
    predict.add_argument("--format", choices=["auto", "json", "csv"], default="auto")
    predict.add_argument("--labels", action="store_true", help="確率ではなくラベル名を出力する")

    sub.add_parser("info", help="モデルカードとランタイムが導いた情報を表示する")
    card.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """エントリポイント。終了コードを返す。"""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        for name in ("host", "port", "workers"):
            if getattr(args, name) is not None:
                os.environ[name.upper()] = str(getattr(args, name))
    try:
        if args.command in OFFLINE_COMMANDS:  # モデルを設定から読まないコマンド
            return OFFLINE_COMMANDS[args.command](args)
        settings = Settings()
        # serve 以外は標準出力を結果だけにする（ログは標準エラーへ）
        stream = "stdout" if args.command == "serve" else "stderr"
        logging.config.dictConfig(
            logging_config(settings.log_level, settings.log_format, stream=stream)
        )
        if args.command == "serve":
            from model_in_image.server import serve

            return serve(settings)
        dataplane = load_dataplane(settings)
        if args.command == "info":
            return _info(dataplane)
        return _predict(dataplane, args.input, args.format, labels=args.labels)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModelServerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _train(output_dir: Path, seed: int) -> int:
    from model_in_image.training import train

    result = train(output_dir, seed)
    print(orjson.dumps(result.card.model_dump(), option=orjson.OPT_INDENT_2).decode())
    return 0


OFFLINE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": lambda args: _train(args.output_dir, args.seed),
    "card": card.main,
}


def _info(dataplane: DataPlane) -> int:
    sig = dataplane.classifier.signature
    info: dict[str, Any] = {
        "metadata": orjson.loads(encode_metadata(dataplane)),
        "signature": {
            "input_name": sig.input_name,
            "input_type": sig.input_type,
            "input_width": sig.input_width,
            "output_name": sig.output_name,
            "output_type": sig.output_type,
            "output_kind": sig.output_kind.value,
            "num_classes": sig.num_classes,
        },
        "model_card": dataplane.card.model_dump() if dataplane.card else None,
        "sbom": sbom_summary(),
    }
    print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    return 0


def _read_rows(source: str, fmt: str) -> tuple[list[list[Any]], str]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelServerError(f"cannot read input {source}: {exc}", 400) from exc
    if fmt == "auto":
        fmt = "json" if text.lstrip()[:1] in ("{", "[") else "csv"
    if fmt == "json":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ModelServerError(f"input is not valid JSON: {exc}", 400) from exc
        rows = parsed.get("data") if isinstance(parsed, dict) else parsed
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ModelServerError('JSON input must be {"data": [[...], ...]} or [[...], ...]', 400)
        return rows, "data"
    reader = csv.reader(io.StringIO(text))
    lines = [row for row in reader if row and any(cell.strip() for cell in row)]
    if lines and not _is_number(lines[0][0]):
        lines = lines[1:]  # 見出し行
    try:
        return [[float(cell) for cell in row] for row in lines], "csv"
    except ValueError as exc:
        raise ModelServerError(f"CSV input has a value that is not a number: {exc}", 400) from exc


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _predict(dataplane: DataPlane, source: str, fmt: str, *, labels: bool) -> int:
    rows, where = _read_rows(source, fmt)
    for row in rows:
        for value in row:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelServerError(f"{where}: every value must be a number, got {value!r}", 400)
    features = dataplane.validate(rows, loc=(where,))
    probabilities = dataplane.predict(features)
    out = dataplane.labels_of(probabilities) if labels else probabilities.astype(float).tolist()
    for item in out:
        sys.stdout.write(orjson.dumps(item).decode() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
