"""Spark の例（docs/model.md）：mapInArrow に FrameScorer.batches、local[2]、CLI と同じ答え。

PySpark は重い（sdist のビルド約 2 分・478 MB）ので extra にも CI にも入れていない：
`uv run --frozen --with pyspark==4.3.0 pytest tests/batch_engines` で動かす。Java が要る。
Spark はテストが 127.0.0.1 だけで起こす（SPARK_LOCAL_IP、UI 無し）。
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "pyspark", reason="opt-in: uv run --frozen --with pyspark==4.3.0 pytest tests/batch_engines"
)
if shutil.which("java") is None:
    pytest.skip("Spark needs a Java runtime (openjdk-17-jre-headless)", allow_module_level=True)

from batch_engines.recipes import pq, prepare, recipe, same_rows, single_process

pytestmark = [
    pytest.mark.timeout(600),
    # PySpark 4.3 は pandas 3 を「まだ完全には」と警告する（mapInArrow は pandas を使わない）
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """このモジュールの SparkSession（local[2]、127.0.0.1）。終わったら stop で止める。

    JVM の作業フォルダーは起動したときのフォルダーに決まるので、例の作業フォルダーで起こす。
    """
    from pyspark.sql import SparkSession

    work = prepare(tmp_path_factory.mktemp("spark"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        mp.setenv("PYSPARK_PYTHON", sys.executable)  # ワーカーもこの venv の Python
        session = (
            SparkSession.builder.master("local[2]")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture
def workdir(spark: Any, clean_env: pytest.MonkeyPatch, restore_logging: None) -> Path:
    """Spark を起こした作業フォルダー（conftest の workdir の代わり）。"""
    return Path(os.getcwd())


def test_the_documented_recipe_matches_the_single_process_cli(workdir: Path, spark: Any) -> None:
    code = recipe("mapInArrow(")
    exec(compile(code, "docs/model.md (Spark)", "exec"), {})
    got = pq.read_table(workdir / "scored-spark")
    same_rows(got, single_process(workdir))


def test_an_invalid_row_fails_the_job_with_its_reason(workdir: Path, spark: Any) -> None:
    """不正な行（float32 に入らない値）は、CLI と同じ理由でジョブが失敗する。"""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    from model_in_image.batch.frames import frame_scorer

    scorer = frame_scorer("models/iris_svc.onnx", labels="models/label.json", keep_columns=["id"])
    column = "sepal length (cm)"
    df = spark.read.parquet("data/")
    bad = df.withColumn(column, F.when(F.col("id") == 7, 1e39).otherwise(F.col(column)))
    schema = from_arrow_schema(scorer.output_schema(to_arrow_schema(bad.schema)))
    with pytest.raises(Exception, match=r"row \d+, column \d+ 'sepal length \(cm\)'"):
        bad.mapInArrow(scorer.batches, schema).collect()
