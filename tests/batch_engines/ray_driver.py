"""Ray の例を別のプロセスで動かす（tests/batch_engines/test_ray.py が作業フォルダーで起こす）。

Ray はノードのプロセス（GCS・raylet・エージェント）を子に持つので、pytest のプロセスの外で
起こして止める。結果は result.json（不正な行の文面・skip で残った id）と scored-ray/。
終了コード 75：Ray のノードが固定の 30 秒で 2 回とも起動しなかった（重いマシン）。
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STARTUP_TIMEOUT_EXIT = 75
STARTUP_ATTEMPTS = 2  # 混んだマシンでは 1 回目が 30 秒を超えることがある


def invalid_rows(ray: object) -> dict[str, object]:
    """float32 に入らない値の行：既定は BatchError で止まり、skip_invalid はその行だけ除く。"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model_in_image.batch.frames import frame_scorer
    from model_in_image.batch.ray import RayScorer

    table = pq.read_table("data/rows-0.parquet")
    column = table.column(1).to_pylist()
    column[7] = 1e39
    bad = table.set_column(1, table.schema.field(1), pa.array(column))
    model = "models/iris_svc.onnx"
    result: dict[str, object] = {"rows": table.num_rows}
    stopping = frame_scorer(model, labels="models/label.json", ignore_columns=["id"])
    try:
        ray.data.from_arrow(bad).map_batches(  # type: ignore[attr-defined]
            RayScorer, fn_constructor_args=(stopping,), batch_format="pyarrow", concurrency=1
        ).materialize()
        result["error"] = None
    except Exception as exc:
        result["error"] = str(exc)
    skipping = frame_scorer(model, skip_invalid=True, keep_columns=["id"])
    kept = ray.data.from_arrow(bad).map_batches(  # type: ignore[attr-defined]
        RayScorer, fn_constructor_args=(skipping,), batch_format="pyarrow", concurrency=1
    )
    tables = ray.get(kept.to_arrow_refs())  # type: ignore[attr-defined]
    result["kept_ids"] = pa.concat_tables(tables).column("id").to_pylist()
    return result


def main() -> int:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # 外へ送らない
    # uv run の下で起動されたドライバーを見つけると、Ray はワーカーも uv run で起こす（既定）：
    # オフラインではワーカーが登録されず、アクターが待ち続けた
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    import ray
    from ray._private import services

    # Ray は 127.0.0.1 を「外から届く」アドレス（このマシンのインターフェース）に置き換える：
    # 置き換えずに、GCS・raylet・エージェントを 127.0.0.1 だけで待たせる（Ray 2.60 の内部の関数）
    services.resolve_ip_for_localhost = lambda host: host
    for attempt in range(STARTUP_ATTEMPTS):
        try:
            ray.init(
                # 論理 CPU：アクター 2 つ（各 1）のほかに読み込み・書き出しのタスクの分（2 だと
                # アクターが取り切り、書き出しが予算待ちで進まなかった）。実際の CPU は 2 のまま
                num_cpus=4,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                configure_logging=False,
                log_to_driver=False,
            )
            break
        except Exception as exc:  # Ray のノードの起動待ちは 30 秒に固定（設定できない）
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            print(f"Ray's node did not start in 30 s (attempt {attempt + 1})", file=sys.stderr)
    else:
        return STARTUP_TIMEOUT_EXIT
    try:
        code = Path(sys.argv[1]).read_text(encoding="utf-8")
        exec(compile(code, "docs/model.md (Ray Data)", "exec"), {})
        Path("result.json").write_text(json.dumps(invalid_rows(ray)), encoding="utf-8")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
