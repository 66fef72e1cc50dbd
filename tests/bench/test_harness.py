"""ベンチマークの部品（wrk の出力解析・集計・比率・/proc・variant）の確認。wrk は使わない。"""

from __future__ import annotations

import dataclasses
import http.server
import json
import math
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks import grpc_load, procstat, protocols, report, wrk
from benchmarks.cli import extract_src, make_plan, parse_args, select_variants
from benchmarks.environment import gunicorn_worker_class
from benchmarks.heavy_model import write_mlp
from benchmarks.measure import QUICK
from benchmarks.processes import Server, ServerStartError, check_response, server_env
from benchmarks.variants import (
    LOAD_GROUPS,
    LOADS,
    PEER_REQUIREMENTS,
    VARIANTS,
    baseline_variant,
    expand,
    loads_for,
    settings_fields,
)

from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:49479/predict
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  833.09us   9.13ms   75.54%
    Req/Sec     6.14k   564.48     7.47k    76.19%
  Latency Distribution
     50%    2.59ms
     99%    5.17ms
  12839 requests in 2.10s, 1.92MB read
Requests/sec:   6113.46
WRK_JSON {"requests":12839,"duration_us":2100121,"bytes":2015831,\
"errors":{"connect":0,"read":1,"write":0,"status":3,"timeout":2},\
"latency_us":{"mean":2605.5,"max":9127.0,"p50":2589.0,"p90":3513.0,"p99":5174.0}}
"""


def test_parse_wrk_output() -> None:
    result = wrk.parse_output(WRK_OUTPUT)
    assert result.requests == 12839
    assert result.rps == pytest.approx(12839 / 2.100121)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (2.589, 3.513, 5.174)
    assert (result.socket_errors, result.non_2xx, result.timeouts) == (3, 3, 2)
    assert result.errors == 6


def test_parse_wrk_output_without_summary_line() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        wrk.parse_output("Running 2s test\n")


def test_lua_script_embeds_body_and_summary() -> None:
    body = LOADS[-1].body()
    script = wrk.lua_script(body)
    assert f"wrk.body = [==[{body}]==]" in script
    assert "done = function(summary, latency, requests)" in script
    assert wrk.MARKER in script
    with pytest.raises(ValueError, match="terminator"):
        wrk.lua_script('{"x": "]==]"}')


def test_wrk_command_caps_threads_at_connections() -> None:
    argv = wrk.command(
        "wrk", "http://127.0.0.1:1/predict", Path("s.lua"), connections=1, seconds=2, threads=4
    )
    assert argv[1:4] == ["-t1", "-c1", "-d2s"]
    assert argv[-1] == "http://127.0.0.1:1/predict"


def test_batch_load_body_cycles_species() -> None:
    batch = next(ld for ld in LOADS if ld.key == "batch64")
    rows = json.loads(batch.body())["data"]
    assert len(rows) == 64
    assert rows[0] == [5.1, 3.5, 1.4, 0.2]
    assert rows[2] == [6.3, 2.9, 5.6, 1.8]


def _sample(variant: str, rps: float, cpu: float, repeat: int = 0) -> report.Sample:
    return report.Sample(
        variant=variant,
        workers=2,
        load="c64",
        repeat=repeat,
        rps=rps,
        p50_ms=1.0,
        p99_ms=3.0,
        requests=int(rps * 5),
        errors=0,
        cpu_us_per_req=cpu,
        rss_worker_mb=60.0,
        rss_total_mb=130.0,
        busy_processes=2,
    )


def _points() -> list[report.Point]:
    samples = [
        _sample("ours", 30000, 50, 0),
        _sample("textbook", 8000, 200, 0),
        _sample("ours", 34000, 46, 1),
        _sample("textbook", 10000, 180, 1),
        _sample("floor", 40000, 40, 0),
    ]
    return report.aggregate(samples)


def test_aggregate_reports_median_and_range() -> None:
    ours = next(p for p in _points() if p.variant == "ours")
    assert ours.n == 2
    assert (ours.rps.mid, ours.rps.lo, ours.rps.hi) == (32000, 30000, 34000)
    assert ours.rps.spread_pct == pytest.approx(12.5)


def test_ratios_use_medians_and_worst_best_range() -> None:
    items = {(r.num, r.den): r for r in report.ratios(_points())}
    assert set(items) == {("ours", "textbook"), ("ours", "floor")}
    vs_textbook = items["ours", "textbook"]
    assert vs_textbook.rps.mid == pytest.approx(32000 / 9000)
    assert vs_textbook.rps.lo == pytest.approx(30000 / 10000)
    assert vs_textbook.rps.hi == pytest.approx(34000 / 8000)
    assert vs_textbook.cpu.mid == pytest.approx(48 / 190)


def test_ratio_with_zero_denominator_is_nan() -> None:
    value = report.ratio(report.Stat(1, 1, 1), report.Stat(0, 0, 0))
    assert math.isnan(value.mid)


def test_tables_and_json(tmp_path: Path) -> None:
    points = report.sort_points(_points(), [ld.key for ld in LOADS], [v.name for v in VARIANTS])
    assert [p.variant for p in points] == ["floor", "textbook", "ours"]
    labels = {ld.key: ld.label for ld in LOADS}
    table = report.render_table(points, labels)
    assert "| 2 | 1 row, c=64 | ours | 32,000 [30,000–34,000] |" in table
    assert "ours/textbook" in report.render_ratios(report.ratios(points), labels)
    out = tmp_path / "r.json"
    report.write_json(out, {"mode": "test"}, [_sample("ours", 1, 1)], points)
    data = json.loads(out.read_text())
    assert data["meta"] == {"mode": "test"}
    assert len(data["points"]) == 3
    assert data["ratios"][0]["num"] == "ours"


def test_chart_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "chart.png"
    report.draw_chart(out, _points(), {"c64": "1 row, c=64"}, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_proc_tree_of_this_process() -> None:
    tree = procstat.snapshot(os.getpid())
    me = tree[os.getpid()]
    assert me.rss_bytes > 0
    assert me.own_ticks >= 0
    assert procstat.total_ticks(tree) >= me.own_ticks
    assert procstat.ticks_to_seconds(procstat.CLK_TCK) == 1.0


def test_parse_stat_handles_spaces_in_comm() -> None:
    fields = ["S", "7"] + ["0"] * 9 + ["10", "5", "3", "2"] + ["0"] * 30
    text = "123 (a b) c) " + " ".join(fields)
    assert procstat.parse_stat(text) == (7, 15, 5)


def test_busy_processes_picks_the_workers() -> None:
    def sample(pid: int, ticks: int) -> procstat.ProcSample:
        return procstat.ProcSample(pid, 1, ticks, 0, 1 << 20)

    before = {1: sample(1, 100), 2: sample(2, 10), 3: sample(3, 10)}
    after = {1: sample(1, 101), 2: sample(2, 60), 3: sample(3, 55), 4: sample(4, 1)}
    assert [p.pid for p in procstat.busy_processes(before, after)] == [2, 3]
    assert procstat.busy_processes(before, before) == []


def test_variants_expand_and_select() -> None:
    values = {
        "python": "/py",
        "uv": "/uv",
        "root": "/r",
        "bindir": "/bin",
        "path": "/usr/bin",
        "gunicorn_worker": "uvicorn.workers.UvicornWorker",
        "textbook_model": "/m.onnx",
        "textbook_labels": "/l.json",
        "otlp_endpoint": "http://127.0.0.1:4318",
        "mlp_model": "/mlp.onnx",
        "port": "8123",
        "grpc_port": "8124",
        "workers": "2",
    }
    for variant in VARIANTS:
        argv = [expand(a, values) for a in variant.argv]
        assert all("{" not in a for a in argv)
        env = server_env(variant, values, ("LOG_LEVEL",))
        assert "LOG_LEVEL" not in env
        assert env.get("PORT", "8123") == "8123" or "8123" in argv
    chosen, skipped = select_variants(None, frozenset({"access_log"}))
    assert {"ours-nometrics", "ours-nomonitoring", "ours-tracing"} <= set(skipped)
    assert "ours-nometrics" not in [v.name for v in chosen]
    tracing = next(v for v in VARIANTS if v.name == "ours-tracing")
    env = server_env(tracing, values, ())
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert {"floor", "textbook", "ours"} <= {v.name for v in chosen}


def test_heavy_loads_go_only_to_the_mlp_variants() -> None:
    """重い MLP の負荷は MLP の variant だけが測り、MLP の variant は Iris の負荷を測らない。"""
    keys = LOAD_GROUPS["all"]
    by_name = {v.name: {ld.key for ld in loads_for(v, keys, quick=False)} for v in VARIANTS}
    assert by_name["ours-mlp"] == by_name["ours-mlp-batch64"] == set(LOAD_GROUPS["heavy"])
    assert not by_name["ours"] & set(LOAD_GROUPS["heavy"])
    assert not set(LOAD_GROUPS["seed"]) & set(LOAD_GROUPS["heavy"])
    body = json.loads(next(ld for ld in LOADS if ld.key == "mlp-c64").body())
    assert [len(row) for row in body["data"]] == [64]


def test_heavy_model_batches_rows(tmp_path: Path) -> None:
    """ハーネスが作る MLP は [N, 64] → [N, 4]（行ごとの出力：まとめても答えは同じ）。"""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(write_mlp(tmp_path / "mlp.onnx")), providers=["CPUExecutionProvider"]
    )
    rows = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    (together,) = session.run(None, {"input": rows})
    alone = np.concatenate([session.run(None, {"input": rows[i : i + 1]})[0] for i in range(5)])
    assert together.shape == (5, 4)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_quick_plan_limits_extra_variants() -> None:
    plan = make_plan(parse_args(["--quick"]))
    assert plan.quick
    assert plan.repeats >= 2
    accesslog = next(v for v in VARIANTS if v.name == "ours-noaccesslog")
    assert [ld.key for ld in loads_for(accesslog, plan.loads, quick=True)] == ["c64"]
    assert [ld.key for ld in loads_for(accesslog, plan.loads, quick=True, workers=1)] == ["c64"]
    assert loads_for(accesslog, plan.loads, quick=True, workers=2) == ()
    assert len(loads_for(accesslog, plan.loads, quick=False, workers=2)) == len(LOAD_GROUPS["seed"])
    assert plan.estimate_seconds(VARIANTS) < 5 * 60
    full = make_plan(parse_args(["--repeats", "3", "--workers", "2", "--loads", "c1,c64"]))
    assert (full.quick, full.repeats, full.workers, full.loads) == (False, 3, (2,), ("c1", "c64"))
    assert QUICK.seconds <= 5


def test_settings_fields_and_worker_class() -> None:
    assert "access_log" in settings_fields()
    assert gunicorn_worker_class().endswith("UvicornWorker")


def test_baseline_runs_src_of_a_git_ref(tmp_path: Path) -> None:
    """--baseline REF：REF の src を書き出し、同じ仮想環境の python で PYTHONPATH から起動する。"""
    src = extract_src("HEAD", tmp_path / "baseline")
    assert (src / "model_in_image" / "__init__.py").is_file()
    variant = baseline_variant("HEAD")
    values = {
        "python": "/venv/bin/python",
        "baseline_src": str(src),
        "port": "1",
        "grpc_port": "3",
        "workers": "2",
    }
    assert [expand(a, values) for a in variant.argv][:3] == [
        "/venv/bin/python",
        "-m",
        "model_in_image.cli",
    ]
    env = server_env(variant, values, ())
    assert env["PYTHONPATH"] == str(src)
    assert (env["PORT"], env["GRPC_PORT"], env["WORKERS"]) == ("1", "3", "2")
    assert variant.apis == ("seed", "v2")  # 古い REF に gRPC は無い
    with pytest.raises(SystemExit, match="git archive no-such-ref"):
        extract_src("no-such-ref", tmp_path / "missing")


# --- gRPC と REST の比較（負荷の組・API ごとの負荷・表・gRPC の負荷クライアント） ---------


def test_load_groups_default_to_the_seed_api() -> None:
    # 全部の実行は重い MLP（適応バッチと peer）も、quick はシード API だけ
    assert make_plan(parse_args([])).loads == (*LOAD_GROUPS["seed"], *LOAD_GROUPS["heavy"])
    assert make_plan(parse_args(["--quick"])).loads == LOAD_GROUPS["seed"]
    assert {ld.api for ld in LOADS if ld.key in LOAD_GROUPS["seed"]} == {"seed"}
    plan = make_plan(parse_args(["--loads", "protocols,c1"]))
    assert plan.loads == (*LOAD_GROUPS["protocols"], "c1")
    protocols = [ld for ld in LOADS if ld.key in LOAD_GROUPS["protocols"]]
    # gRPC と V2 REST が同じ行数・同じ同時接続数で対になる：1 行と 64 行、c=1 と c=64
    pairs = {(ld.rows, ld.connections) for ld in protocols if ld.api == "grpc"}
    assert pairs == {(ld.rows, ld.connections) for ld in protocols if ld.api == "v2"}
    assert pairs == {(1, 1), (1, 64), (64, 1), (64, 64)}
    with pytest.raises(SystemExit, match="unknown loads"):
        make_plan(parse_args(["--loads", "grpc-r2-c2"]))


def test_only_our_server_gets_v2_and_grpc_loads() -> None:
    keys = LOAD_GROUPS["all"]
    by_name = {v.name: v for v in VARIANTS}
    assert {ld.api for ld in loads_for(by_name["ours"], keys, quick=False)} == {
        "seed",
        "v2",
        "grpc",
    }
    for name in ("floor", "textbook"):
        assert {ld.api for ld in loads_for(by_name[name], keys, quick=False)} == {"seed"}


def test_v2_load_body_is_an_inference_request() -> None:
    load = next(ld for ld in LOADS if ld.key == "v2-r64-c1")
    body = json.loads(load.body())
    (tensor,) = body["inputs"]
    assert (tensor["shape"], tensor["datatype"]) == ([64, 4], "FP32")
    assert tensor["data"][:8] == [5.1, 3.5, 1.4, 0.2, 5.9, 3.0, 4.2, 1.5]
    assert load.path == "/v2/models/iris_svc/infer"


def _protocol_samples() -> list[report.Sample]:
    rest = dataclasses.replace(_sample("ours", 6000, 80), load="v2-r1-c1", p99_ms=5.0)
    grpc = dataclasses.replace(_sample("ours", 1500, 400), load="grpc-r1-c1", p99_ms=4.0)
    later = dataclasses.replace(grpc, repeat=1)  # REST の無い反復：比に入れない
    return [rest, grpc, later]


def test_protocol_table_pairs_rest_and_grpc_per_repeat() -> None:
    pairs = [
        ("1 row(s), c=1", 1, "v2-r1-c1", "grpc-r1-c1"),
        ("64 row(s), c=1", 64, "v2-r64-c1", "x"),
    ]
    items = protocols.pairs_of(_protocol_samples(), pairs)
    table = protocols.render_protocols(items)
    assert (
        "| 2 | ours | 1 row(s), c=1 | 6,000 | 1,500 | 0.25× | 80 | 400 | 5.00× | 5.00 | 4.00 |"
        in table
    )
    assert "64 row(s)" not in table  # 片方しか測っていない点は出さない
    assert protocols.render_targets(items) == (
        "workers 2 ours 1 row(s), c=1: gRPC/REST CPU 5.00× (target ≤ 2.00×): missed by 150 %"
    )
    assert protocols.render_protocols(protocols.pairs_of([_sample("ours", 6000, 80)], pairs)) == ""


def test_targets_say_met_when_grpc_is_ahead() -> None:
    rest = dataclasses.replace(_sample("ours", 3000, 150), load="v2-r64-c64")
    grpc = dataclasses.replace(_sample("ours", 4500, 200), load="grpc-r64-c64")
    items = protocols.pairs_of(
        [rest, grpc], [("64 row(s), c=64", 64, "v2-r64-c64", "grpc-r64-c64")]
    )
    assert protocols.render_targets(items).endswith("gRPC/REST req/s 1.50× (target ≥ 1.00×): met")


def test_grpc_load_output_is_parsed_like_wrk() -> None:
    latencies = [0.001 * (i + 1) for i in range(100)]  # 1〜100 ms
    summary = grpc_load.summarize(
        latencies, Counter({"INVALID_ARGUMENT": 2, "UNAVAILABLE": 1}), 2.0
    )
    result = grpc_load.parse_output("noise\n" + grpc_load.MARKER + json.dumps(summary) + "\n")
    assert result.requests == 100
    assert result.rps == pytest.approx(50.0)
    assert result.p50_ms == pytest.approx(50.5)
    assert result.p99_ms == pytest.approx(99.01)
    assert (result.non_2xx, result.socket_errors, result.errors) == (2, 1, 3)
    with pytest.raises(ValueError, match="GRPC_LOAD_JSON"):
        grpc_load.parse_output("nothing\n")


def test_grpc_load_request_is_a_raw_model_infer_request() -> None:
    request = pb.ModelInferRequest.FromString(grpc_load.request_bytes(64))
    assert request.model_name == "iris_svc"
    assert list(request.inputs[0].shape) == [64, 4]
    rows = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(64, 4)
    assert rows[1].tolist() == pytest.approx([5.9, 3.0, 4.2, 1.5])
    argv = grpc_load.command("127.0.0.1:1", rows=64, connections=8, seconds=2)
    assert argv[1:3] == ["-m", "benchmarks.grpc_load"]
    assert argv[-6:] == ["--rows", "64", "--connections", "8", "--seconds", "2"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "10.0.0.1:8081"],
        ["--target", "127.0.0.1:1", "--connections", "0"],
        ["--target", "127.0.0.1:1", "--seconds", "9999"],
    ],
    ids=["not-loopback", "no-connections", "too-long"],
)
def test_grpc_load_refuses_unbounded_or_remote_runs(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        grpc_load.main(argv)


def test_peer_variants_run_bentoml_pinned_with_hashes() -> None:
    """peer は固定した版（ハッシュ付き）の BentoML を別環境で起動し、/readyz で準備完了を見る。"""
    peers = {v.name: v for v in VARIANTS if v.peer}
    assert set(peers) == {"peer-bentoml", "peer-bentoml-mlp", "peer-bentoml-mlp-batch64"}
    pins = PEER_REQUIREMENTS.read_text()
    assert "\nbentoml==1.4.40 \\\n    --hash=sha256:" in pins
    assert "\nonnxruntime==" in pins
    for variant in peers.values():
        assert variant.health_path == "/readyz"
        assert "--with-requirements" in variant.argv
        assert "benchmarks.peers.bentoml_service:Peer" in variant.argv
    batch = peers["peer-bentoml-mlp-batch64"].env
    assert batch["PEER_MAX_BATCH_SIZE"] == "64"
    assert "PEER_MAX_BATCH_SIZE" not in peers["peer-bentoml-mlp"].env
    assert next(v for v in VARIANTS if v.name == "ours").health_path == "/health"
    # peer の Iris はシード API の負荷だけ、MLP の peer は重い負荷だけを測る
    keys = LOAD_GROUPS["all"]
    assert {ld.key for ld in loads_for(peers["peer-bentoml"], keys, quick=False)} == set(
        LOAD_GROUPS["seed"]
    )
    assert {ld.key for ld in loads_for(peers["peer-bentoml-mlp"], keys, quick=False)} == set(
        LOAD_GROUPS["heavy"]
    )


def _answering(body: bytes) -> Any:
    """POST に body で答える 127.0.0.1 の HTTP サーバー（スレッド）。"""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.mark.parametrize(
    ("peer", "body", "accepted"),
    [
        (True, b"[[0.9, 0.05, 0.05]]", True),  # 1 行に 1 行
        (True, b"[[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]]", False),  # 行の数が違う
        (True, b'{"prediction": [0.9, 0.05, 0.05]}', False),  # peer は配列で答える
        (False, b'{"prediction": [0.9, 0.05, 0.05]}', True),
        (False, b"[[0.9, 0.05, 0.05]]", False),
    ],
)
def test_check_response_expects_each_server_s_answer(
    peer: bool, body: bytes, accepted: bool
) -> None:
    variant = next(v for v in VARIANTS if v.peer == peer and v.model == "iris")
    load = next(ld for ld in LOADS if ld.key == "c1")
    httpd = _answering(body)
    try:
        server = Server(variant, [], {}, httpd.server_address[1])
        if accepted:
            assert check_response(server, load).startswith(body[:20].decode())
        else:
            with pytest.raises(ServerStartError):
                check_response(server, load)
    finally:
        httpd.shutdown()
        httpd.server_close()
