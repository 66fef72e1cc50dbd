"""比較するサーバー（名前 + コマンド + 環境変数）と負荷の定義。データだけで増やせる。

コマンドと環境変数の値は {port} {grpc_port} {workers} {python} {uv} {root} {bindir}
{gunicorn_worker} {textbook_model} {textbook_labels} {mlp_model} を起動時に置き換える。
{mlp_model} を使う variant があれば、ハーネスが重いモデル（benchmarks/heavy_model.py）を
一時ディレクトリに作る。{otlp_endpoint} を使う variant があれば、ハーネスが 127.0.0.1 に
OTLP/HTTP の受け口（benchmarks/sink.py）を立てる。
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.heavy_model import sample_row

ROOT = Path(__file__).resolve().parents[1]
TEXTBOOK_DIR = ROOT / "benchmarks" / "textbook"
REFERENCE_DIR = ROOT / "models" / "reference"
SPECIES_ROWS = ([5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8])
V2_INFER = "/v2/models/iris_svc/infer"
GRPC_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# 負荷の API：seed（POST /predict）・v2（V2 REST の JSON）・grpc（V2 gRPC、raw_input_contents）
SEED, V2, GRPC = "seed", "v2", "grpc"
# 負荷のモデル：Iris（同梱・教科書と同じ）か重い MLP（64 → 1024 → 1024 → 4）
IRIS, MLP = "iris", "mlp"


@dataclass(frozen=True, slots=True)
class Variant:
    """ベンチマークするサーバー 1 種類。"""

    name: str
    description: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    # quick モードで測る負荷とワーカー数（None なら全部）
    quick_loads: tuple[str, ...] | None = None
    quick_workers: tuple[int, ...] | None = None
    # この設定項目が Settings に有るときだけ測る（将来の METRICS_ENABLED などのフック）
    requires_setting: str | None = None
    # 比較の基準線（表の並びとグラフ用）
    baseline: bool = False
    # 答えられる負荷の API（floor と教科書はシード API だけ）
    apis: tuple[str, ...] = (SEED,)
    # 提供するモデル（負荷はこのモデルのものだけを測る）
    model: str = IRIS
    # PyPI の別のサーバー（benchmarks/peers/）：準備完了は /readyz、応答は行の JSON の配列
    peer: bool = False

    @property
    def health_path(self) -> str:
        """準備完了を確かめるパス。"""
        return "/readyz" if self.peer else "/health"


@dataclass(frozen=True, slots=True)
class Load:
    """負荷 1 種類（API・行数・同時接続数）。HTTP は wrk、gRPC は benchmarks.grpc_load で送る。"""

    key: str
    label: str
    path: str
    rows: int
    connections: int
    api: str = SEED
    model: str = IRIS

    def body(self) -> str:
        """rows 行の HTTP ボディ（シード API か V2 の JSON）。Iris は 3 品種を巡回する。"""
        data = [SPECIES_ROWS[i % len(SPECIES_ROWS)] for i in range(self.rows)]
        if self.model == MLP:
            data = [sample_row() for _ in range(self.rows)]
        if self.api == V2:
            flat = [value for row in data for value in row]
            tensor = {"name": "input", "shape": [self.rows, 4], "datatype": "FP32", "data": flat}
            return json.dumps({"inputs": [tensor]})
        return json.dumps({"data": data})


# gRPC と REST を同じ行数・同じ同時接続数で並べる点（V2 REST の JSON と V2 gRPC）
PROTOCOL_POINTS = ((1, 1), (1, 64), (64, 1), (64, 64))

LOADS: tuple[Load, ...] = (
    Load("c1", "1 row, c=1", "/predict", 1, 1),
    Load("c16", "1 row, c=16", "/predict", 1, 16),
    Load("c64", "1 row, c=64", "/predict", 1, 64),
    Load("c256", "1 row, c=256", "/predict", 1, 256),
    Load("batch64", "64 rows, c=16", "/predict", 64, 16),
    # REST と gRPC を交互に（同じ点の 2 つを近い時刻に測る）
    *(
        Load(f"{api}-r{rows}-c{conns}", f"{name} {rows} row(s), c={conns}", path, rows, conns, api)
        for rows, conns in PROTOCOL_POINTS
        for api, name, path in ((V2, "V2 REST", V2_INFER), (GRPC, "gRPC", GRPC_MODEL_INFER))
    ),
    Load("mlp-c1", "MLP 1 row, c=1", "/predict", 1, 1, model=MLP),
    Load("mlp-c64", "MLP 1 row, c=64", "/predict", 1, 64, model=MLP),
)

# --loads で使える負荷の組（既定は seed：floor・教科書と比べるシード API の負荷）
LOAD_GROUPS: dict[str, tuple[str, ...]] = {
    "seed": tuple(ld.key for ld in LOADS if ld.api == SEED and ld.model == IRIS),
    "protocols": tuple(ld.key for ld in LOADS if ld.api in (V2, GRPC)),
    # 適応バッチ：重い MLP でバッチなしと MAX_BATCH_SIZE=64 を比べる
    "heavy": tuple(ld.key for ld in LOADS if ld.model == MLP),
    "all": tuple(ld.key for ld in LOADS),
}

_UVICORN_FLOOR = (
    "{python}",
    "-m",
    "uvicorn",
    "benchmarks.floor_app:create_app",
    "--factory",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--workers",
    "{workers}",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--lifespan",
    "off",
    "--no-access-log",
    "--no-server-header",
    "--log-level",
    "warning",
)
_OURS = ("{uv}", "run", "--frozen", "model-in-image", "serve")
_OURS_ENV = {
    "HOST": "127.0.0.1",
    "PORT": "{port}",
    "GRPC_PORT": "{grpc_port}",
    "WORKERS": "{workers}",
}
_OURS_APIS = (SEED, V2, GRPC)
_MLP_ENV = {**_OURS_ENV, "MODEL_FILEPATH": "{mlp_model}", "LABEL_FILEPATH": ""}
# peer：BentoML を固定した版で別の一時環境に入れて起動する（初回だけ PyPI から入れる）
PEER_REQUIREMENTS = ROOT / "benchmarks" / "peers" / "bentoml-requirements.txt"
_BENTOML = (
    "{uv}",
    "run",
    "--isolated",
    "--no-project",
    "--python",
    "3.11",
    "--with-requirements",
    str(PEER_REQUIREMENTS),
    "bentoml",
    "serve",
    "benchmarks.peers.bentoml_service:Peer",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
)
_BENTOML_ENV = {"PEER_MODEL": str(ROOT / "models" / "iris_svc.onnx"), "PEER_WORKERS": "{workers}"}
_BENTOML_MLP_ENV = {**_BENTOML_ENV, "PEER_MODEL": "{mlp_model}"}

VARIANTS: tuple[Variant, ...] = (
    Variant(
        name="floor",
        description="raw ASGI + orjson + ONNX Runtime on uvicorn (uvloop, httptools, no log)",
        argv=_UVICORN_FLOOR,
        baseline=True,
    ),
    Variant(
        name="textbook",
        description="textbook: FastAPI sync routes, pydantic, gunicorn + UvicornWorker, run.sh",
        argv=("bash", "run.sh"),
        cwd=TEXTBOOK_DIR,
        env={
            "HOST": "127.0.0.1",
            "PORT": "{port}",
            "WORKERS": "{workers}",
            "UVICORN_WORKER": "{gunicorn_worker}",
            "MODEL_FILEPATH": "{textbook_model}",
            "LABEL_FILEPATH": "{textbook_labels}",
            # 計測中にワーカーが再起動しないよう --max-requests を無効にする（教科書は 65536）
            "LIMIT_MAX_REQUESTS": "0",
            # gunicorn 23+ の制御ソケット（~/.gunicorn）を作らない：教科書の時代には無い
            "GUNICORN_CMD_ARGS": "--no-control-socket",
            "PATH": "{bindir}:{path}",
        },
        baseline=True,
    ),
    Variant(
        name="ours",
        description="model-in-image serve as shipped (uv run --frozen, default settings)",
        argv=_OURS,
        env=_OURS_ENV,
        apis=_OURS_APIS,
    ),
    Variant(
        name="ours-noaccesslog",
        description="ours with ACCESS_LOG=false (the cost of the default access log)",
        argv=_OURS,
        env={**_OURS_ENV, "ACCESS_LOG": "false"},
        quick_loads=("c64",),
        quick_workers=(1,),
    ),
    Variant(
        name="ours-nomonitoring",
        description="ours with PREDICTION_MONITORING=false (the cost of drift and class metrics)",
        argv=_OURS,
        env={**_OURS_ENV, "PREDICTION_MONITORING": "false"},
        quick_loads=("c64",),
        quick_workers=(1,),
        requires_setting="prediction_monitoring",
    ),
    Variant(
        name="ours-nogrpc",
        description="ours with GRPC_PORT=0 (no gRPC server and its poller thread in the worker)",
        argv=_OURS,
        env={**_OURS_ENV, "GRPC_PORT": "0"},
        quick_loads=(),  # --quick では測らない（--variants で名指しして測る）
        quick_workers=(1,),
    ),
    Variant(
        name="ours-bare",
        description="ours with ACCESS_LOG=false and PREDICTION_MONITORING=false (request IDs only)",
        argv=_OURS,
        env={**_OURS_ENV, "ACCESS_LOG": "false", "PREDICTION_MONITORING": "false"},
        quick_loads=("c64",),
        quick_workers=(1,),
        requires_setting="prediction_monitoring",
    ),
    Variant(
        name="ours-tracing",
        description="ours exporting every request as an OTLP/HTTP span to a local sink",
        argv=_OURS,
        env={**_OURS_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "{otlp_endpoint}"},
        quick_loads=("c64",),
        quick_workers=(1,),
        requires_setting="otel_exporter_otlp_endpoint",
    ),
    Variant(
        name="ours-nometrics",
        description="ours with METRICS_ENABLED=false (only when the setting exists)",
        argv=_OURS,
        env={**_OURS_ENV, "METRICS_ENABLED": "false"},
        quick_loads=("c64",),
        quick_workers=(1,),
        requires_setting="metrics_enabled",
    ),
    Variant(
        name="ours-batch64",
        description="ours (Iris) with adaptive batching MAX_BATCH_SIZE=64, delay 0",
        argv=_OURS,
        env={**_OURS_ENV, "MAX_BATCH_SIZE": "64"},
        # quick では測らない（バッチの比較は --variants で明示して測る）
        quick_loads=(),
        requires_setting="max_batch_size",
    ),
    Variant(
        name="ours-mlp",
        description="ours serving the heavy MLP (64-1024-1024-4), batching off (the default)",
        argv=_OURS,
        env=_MLP_ENV,
        model=MLP,
    ),
    Variant(
        name="ours-mlp-batch64",
        description="ours serving the heavy MLP with adaptive batching MAX_BATCH_SIZE=64, delay 0",
        argv=_OURS,
        env={**_MLP_ENV, "MAX_BATCH_SIZE": "64"},
        model=MLP,
        requires_setting="max_batch_size",
    ),
    Variant(
        name="peer-bentoml",
        description="peer: BentoML 1.4.40 serving the same Iris ONNX model (no batching)",
        argv=_BENTOML,
        env=_BENTOML_ENV,
        quick_loads=(),
        peer=True,
    ),
    Variant(
        name="peer-bentoml-mlp",
        description="peer: BentoML 1.4.40 serving the heavy MLP, no batching",
        argv=_BENTOML,
        env=_BENTOML_MLP_ENV,
        model=MLP,
        peer=True,
    ),
    Variant(
        name="peer-bentoml-mlp-batch64",
        description="peer: BentoML 1.4.40 serving the heavy MLP, adaptive batching up to 64 rows",
        argv=_BENTOML,
        env={**_BENTOML_MLP_ENV, "PEER_MAX_BATCH_SIZE": "64", "PEER_MAX_LATENCY_MS": "1000"},
        model=MLP,
        peer=True,
    ),
)


def baseline_variant(ref: str, *, grpc: bool = False) -> Variant:
    """git の ref 時点の src を同じ仮想環境で動かす variant（変更の前後を同じ回で比べる）。

    grpc は ref の src に gRPC があるとき True（gRPC の負荷も前後で比べる）。
    """
    return Variant(
        name="baseline",
        description=f"model-in-image serve from src at {ref} (same venv, PYTHONPATH)",
        argv=("{python}", "-m", "model_in_image.cli", "serve"),
        env={**_OURS_ENV, "PYTHONPATH": "{baseline_src}"},
        apis=(SEED, V2, GRPC) if grpc else (SEED, V2),  # 古い REF には gRPC が無い
    )


def expand(template: str, values: Mapping[str, str]) -> str:
    """{name} を置き換える（知らない名前はエラー）。"""
    return template.format_map(dict(values))


def loads_for(
    variant: Variant, keys: tuple[str, ...], *, quick: bool, workers: int | None = None
) -> tuple[Load, ...]:
    """この variant で測る負荷（quick では quick_loads・quick_workers に絞る）。"""
    limited = quick and variant.quick_workers is not None and workers is not None
    if limited and workers not in (variant.quick_workers or ()):
        return ()
    wanted = variant.quick_loads if quick and variant.quick_loads is not None else keys
    return tuple(
        load
        for load in LOADS
        if load.key in keys
        and load.key in wanted
        and load.api in variant.apis
        and load.model == variant.model
    )


def settings_fields() -> frozenset[str]:
    """model_in_image.Settings の項目名（取れなければ空）。"""
    try:
        from model_in_image.settings import Settings
    except ImportError:
        return frozenset()
    return frozenset(Settings.model_fields)


def available(variant: Variant, fields: frozenset[str]) -> bool:
    """前提の設定項目が有るか。"""
    return variant.requires_setting is None or variant.requires_setting in fields


def textbook_model() -> tuple[Path, Path]:
    """リポジトリに同梱した教科書のモデル（models/reference）とラベル。"""
    return REFERENCE_DIR / "iris_svc.onnx", REFERENCE_DIR / "label.json"
