"""コマンドライン：model-in-image serve | train | predict | info | card。"""

from __future__ import annotations

import argparse
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
from model_in_image.batch import (
    DEFAULT_CHUNK_ROWS,
    MAX_CHUNK_ROWS,
    STDIO,
    BatchOptions,
    BatchResult,
    InputFormat,
    OutputFormat,
    ProgressMode,
    choose_mode,
    load_batch_dataplane,
    run_batch,
)
from model_in_image.batch.arguments import (
    EXIT_INTERRUPTED,
    add_column_options,
    add_engine_options,
    predict_dask,
)
from model_in_image.codecs.seed import encode_metadata
from model_in_image.dataplane import DataPlane
from model_in_image.errors import ModelServerError
from model_in_image.loading import load_dataplane
from model_in_image.logconfig import logging_config
from model_in_image.model.kinds import Postprocess
from model_in_image.sbom import sbom_summary
from model_in_image.settings import LogLevel, Settings

EXIT_USAGE = 2
# 書き込み先のパイプが閉じられた（例 `| head`）：シェルの慣習どおり 128 + SIGPIPE
EXIT_BROKEN_PIPE = 141

# オプション → 設定の項目（環境変数は項目名の大文字：MODEL_FILEPATH など。オプションが優先）
MODEL_OPTIONS = {
    "model": "model_filepath",
    "labels": "label_filepath",
    "card": "model_card_filepath",
    "postprocess": "model_postprocess",
}
SERVER_OPTIONS = {"host": "host", "port": "port", "workers": "workers"}


def _model_options() -> argparse.ArgumentParser:
    """serve・info・predict に共通のモデルの指定（環境変数と同じ意味）。"""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("モデル（省略時は環境変数、それも無ければ同梱の Iris）")
    group.add_argument(
        "--model", type=Path, metavar="M.onnx", help="ONNX モデル（MODEL_FILEPATH と同じ）"
    )
    group.add_argument(
        "--labels", type=Path, metavar="L.json", help="ラベルファイル（LABEL_FILEPATH と同じ）"
    )
    group.add_argument(
        "--card",
        type=Path,
        metavar="C.json",
        help="モデルカード（MODEL_CARD_FILEPATH と同じ。既定はモデルと同じフォルダーの "
        "model_card.json があればそれ）",
    )
    group.add_argument(
        "--postprocess",
        choices=[item.value for item in Postprocess],
        help="ロジットを確率にする後処理（MODEL_POSTPROCESS と同じ、既定 none）",
    )
    return parent


def _chunk_rows(text: str) -> int:
    """--chunk-rows の値（1〜MAX_CHUNK_ROWS の整数）。"""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_CHUNK_ROWS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CHUNK_ROWS}: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-in-image", description="Model-in-Image 推論サーバー"
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    model = _model_options()

    serve = sub.add_parser("serve", parents=[model], help="REST API を起動する")
    serve.add_argument("--host", help="待ち受けアドレス（HOST と同じ、既定 127.0.0.1）")
    serve.add_argument("--port", type=int, help="待ち受けポート（PORT と同じ、既定 8000）")
    serve.add_argument("--workers", type=int, help="サーバープロセス数（WORKERS と同じ、既定 1）")

    train = sub.add_parser("train", help="Iris SVC を学習して ONNX を書き出す")
    train.add_argument(
        "--output-dir", type=Path, default=Path("models"), help="書き出し先（既定 models）"
    )
    train.add_argument("--seed", type=int, default=42, help="乱数の種（既定 42）")

    predict = sub.add_parser(
        "predict",
        parents=[model],
        help="ファイルまたは標準入力の行をオフラインで推論する（大きさの制限なし）",
        description="行をチャンクごとに読み、推論の列（分類器はラベルとクラスごとの確率 "
        "proba_<ラベル名>、回帰は prediction、そのほかは出力ごとの列）を入力の順に書く。"
        "メモリはファイルの大きさによらず一定。",
    )
    predict.add_argument(
        "input",
        nargs="?",
        default=STDIO,
        help="入力ファイル（既定 - は標準入力）：CSV（見出し行はあっても無くてもよい）、"
        "JSON Lines（1 行に 1 つの配列）、シードの JSON ボディ、Parquet",
    )
    predict.add_argument("-o", "--output", default=STDIO, help="出力ファイル（既定 - は標準出力）")
    predict.add_argument(
        "--format",
        type=InputFormat,
        choices=list(InputFormat),
        default=InputFormat.AUTO,
        help="入力の形式（既定 auto：拡張子、無ければ内容で決める。json はシードのボディ "
        '{"data": [[...], ...]}）',
    )
    predict.add_argument(
        "--output-format",
        type=OutputFormat,
        choices=list(OutputFormat),
        default=OutputFormat.AUTO,
        help="出力の形式（既定 auto：出力ファイルの拡張子 .jsonl/.parquet、それ以外は csv）",
    )
    predict.add_argument(
        "--chunk-rows",
        type=_chunk_rows,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help=f"1 回に推論する行数（既定 {DEFAULT_CHUNK_ROWS}、上限 {MAX_CHUNK_ROWS}）",
    )
    predict.add_argument(
        "--skip-invalid",
        action="store_true",
        help="不正な行で止まらず、エラーファイルに書いて続ける（既定は行番号と理由を表示して止まる）",
    )
    predict.add_argument(
        "--errors",
        metavar="PATH",
        help="--skip-invalid のエラーファイル（JSON Lines。既定は OUTPUT.errors.jsonl、"
        "標準出力なら predict-errors.jsonl）",
    )
    add_column_options(predict)
    add_engine_options(predict)
    predict.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="警告と誤りだけを表示する（進み具合・最後の集計・INFO のログを出さない）",
    )
    predict.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="進み具合を必ず出す・出さない（既定：端末なら出す。大きさの分からない端末や "
        "--progress でパイプのときは 10 秒ごとの 1 行）",
    )

    sub.add_parser("info", parents=[model], help="モデルカードとランタイムが導いた情報を表示する")
    card.add_parser(sub)
    return parser


def _overrides(args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    """指定されたオプションだけを {設定の項目: 値} にする。"""
    return {
        name: value
        for option, name in options.items()
        if (value := getattr(args, option, None)) is not None
    }


def _export(overrides: dict[str, Any]) -> None:
    """serve のオプションを環境変数にする。

    WORKERS>1 のワーカーは server.app_from_env で環境変数から Settings を作るので、
    オプションが親と同じ意味で届くのはこの経路だけ（親もここから Settings() を作る）。
    """
    os.environ.update({name.upper(): str(value) for name, value in overrides.items()})


def main(argv: Sequence[str] | None = None) -> int:
    """エントリポイント。終了コードを返す。"""
    args = _parser().parse_args(argv)
    try:
        if args.command in OFFLINE_COMMANDS:  # モデルを設定から読まないコマンド
            return OFFLINE_COMMANDS[args.command](args)
        overrides = _overrides(args, MODEL_OPTIONS)
        if args.command == "serve":
            _export(overrides | _overrides(args, SERVER_OPTIONS))
            settings = Settings()
        else:
            settings = Settings(**overrides)
        # serve 以外は標準出力を結果だけにする（ログは標準エラーへ）
        stream = "stdout" if args.command == "serve" else "stderr"
        logging.config.dictConfig(
            logging_config(_log_level(settings, args), settings.log_format, stream=stream)
        )
        if args.command == "serve":
            from model_in_image.server import serve

            return serve(settings)
        if args.command == "info":
            return _info(load_dataplane(settings))
        return _predict(settings, args)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModelServerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _log_level(settings: Settings, args: argparse.Namespace) -> LogLevel:
    """-q（predict）は警告と誤りだけ：設定のレベルが WARNING より低ければ WARNING にする。"""
    level = settings.log_level
    quiet = getattr(args, "quiet", False)
    if quiet and logging.getLevelNamesMapping()[level.value] < logging.WARNING:
        return LogLevel.WARNING
    return level


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
    model = dataplane.model
    info: dict[str, Any] = {
        "metadata": orjson.loads(encode_metadata(dataplane)),
        "signature": {
            "kind": model.kind.value,
            "inputs": [spec.describe() for spec in model.signature.inputs],
            "outputs": [spec.describe() for spec in model.signature.outputs],
            "prediction_output": model.heads.primary,
            "output_kind": "zipmap" if model.heads.zipmap else "tensor",
            "num_classes": model.num_classes,
            "postprocess": model.postprocess.value,
            "producer": f"{model.graph.producer_name} {model.graph.producer_version}".strip(),
        },
        "model_card": dataplane.card.model_dump() if dataplane.card else None,
        "sbom": sbom_summary(),
    }
    print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    return 0


def _predict(settings: Settings, args: argparse.Namespace) -> int:
    options = BatchOptions(
        input=args.input,
        output=args.output,
        input_format=args.format,
        output_format=args.output_format,
        chunk_rows=args.chunk_rows,
        skip_invalid=args.skip_invalid,
        errors=args.errors,
        header=args.header,
        columns=args.columns,
        keep_columns=args.keep_columns,
        ignore_columns=args.ignore_columns,
        progress=ProgressMode.OFF if args.quiet else choose_mode(args.progress, sys.stderr),
    )
    dataplane = load_batch_dataplane(settings, args.chunk_rows)  # 誤ったモデルはここで止める
    if args.engine == "dask":
        return predict_dask(settings, options, args)
    try:
        result = run_batch(dataplane, options)
    except BrokenPipeError:
        # 読み手が先に終わった：残りの出力を捨てて静かに終える
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(_summary(result, options), file=sys.stderr)
    return 0


def _summary(result: BatchResult, options: BatchOptions) -> str:
    """最後の 1 行：行数・不正な行数・行/秒・出力先。"""
    target = "stdout" if options.output == STDIO else options.output
    line = (
        f"predict: {result.rows:,} rows, {result.invalid:,} invalid, "
        f"{result.seconds:.2f} s, {result.rows_per_second:,.0f} rows/s -> {target}"
    )
    if result.invalid:
        line += f" (invalid rows: {result.errors_path})"
    return line


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
