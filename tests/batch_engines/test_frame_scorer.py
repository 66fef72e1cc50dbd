"""エンジンに渡す形（Ray・Spark が無くても）：frame_scorer、RayScorer、FrameScorer.batches。"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch_engines.recipes import single_process
from model_in_image.batch.frames import frame_scorer
from model_in_image.batch.ray import RayScorer


def test_frame_scorer_carries_absolute_paths(workdir: Path) -> None:
    scorer = frame_scorer("models/iris_svc.onnx", labels="models/label.json")
    assert scorer.settings.model_filepath == (workdir / "models" / "iris_svc.onnx").resolve()
    assert scorer.settings.label_filepath == (workdir / "models" / "label.json").resolve()


def test_ray_scorer_and_spark_batches_answer_like_the_cli(workdir: Path) -> None:
    """RayScorer（map_batches の形）と batches（mapInArrow の形）は CLI と同じ表を返す。"""
    scorer = frame_scorer("models/iris_svc.onnx", labels="models/label.json", keep_columns=["id"])
    actor = RayScorer(scorer)
    assert actor.dataplane is scorer.dataplane  # アクターを作るときに読み、以後は同じもの
    want = single_process(workdir)
    tables = [pq.read_table(p) for p in sorted((workdir / "data").glob("*.parquet"))]
    by_ray = pa.concat_tables([actor(t) for t in tables])
    assert by_ray.equals(want)
    batches = [b for t in tables for b in t.to_batches(max_chunksize=700)]
    by_spark = pa.Table.from_batches(list(scorer.batches(iter(batches))))
    assert by_spark.equals(want)
