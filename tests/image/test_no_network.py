"""ネットワークの無いコンテナ（docker run --network none）：起動し、healthy になり、推論に答える。

Model-in-Image ではモデルがイメージの中にあるので、推論サーバーは外への通信を一切必要としない。
起動や推論で外へ出るコードが入れば（名前解決も接続も即座に失敗する）、このテストが CI で落ちる。
ホストからは届かないので、HTTP は docker exec でコンテナの中から 127.0.0.1 へ送る。
さらに Python の監査フックで、名前解決と外への接続を「試みた」だけでも記録して失敗にする。
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from support.docker import CONTAINER_PORT, Container, DockerEnv, docker

pytestmark = [pytest.mark.image, pytest.mark.timeout(180)]

SPECIES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([5.9, 3.0, 4.2, 1.5], "versicolor"),
    ([6.3, 2.9, 5.6, 1.8], "virginica"),
]
LABELS = ["setosa", "versicolor", "virginica"]
HEALTHY_WITHIN_S = 30.0
# Kubernetes の Pod と同じ制限（読み取り専用、非 root、capabilities なし、権限昇格なし）
LOCKED_DOWN = [
    "--network", "none",
    "--read-only", "--tmpfs", "/tmp",
    "--user", "10001:10001",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--health-interval=1s", "--health-timeout=3s", "--health-retries=3",
]  # fmt: skip
NETWORK_MARK = "MII-NETWORK-ATTEMPT"
# イメージの ENTRYPOINT を、名前解決と外への接続を記録する監査フックの下で動かす
AUDITED_START = f"""
import ipaddress, runpy, sys
def local(address):
    if address is None or isinstance(address, (str, bytes)):
        return True
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False
def literal(host):
    try:
        ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
        return True
    except (AttributeError, ValueError):
        return host in (None, "", "localhost")
def hook(event, args):
    if event == "socket.getaddrinfo" and not literal(args[0]):
        print("{NETWORK_MARK}", event, repr(args[0]), file=sys.stderr, flush=True)
    elif event in ("socket.connect", "socket.sendto", "socket.sendmsg") and not local(args[-1]):
        print("{NETWORK_MARK}", event, repr(args[-1]), file=sys.stderr, flush=True)
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# 対照実験で名前を引くスクリプト（フックが記録すること。ネットワークが無いので届く先は無い）
REACH = """
import socket
try:
    socket.getaddrinfo("collector.observability.svc", 4318)
except OSError:
    pass
"""
# コンテナの中で 127.0.0.1 に問い合わせる（標準ライブラリだけ）
PROBE = """
import json, sys, urllib.request
base = "http://127.0.0.1:" + sys.argv[1]
def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return [response.status, json.loads(response.read())]
rows = json.loads(sys.argv[2])
print(json.dumps({
    "health": call("/health"),
    "predict": call("/predict", {"data": rows}),
    "label": call("/predict/label", {"data": rows}),
}))
"""


@contextmanager
def offline_container(docker_env: DockerEnv, *, audited: bool) -> Iterator[Container]:
    """--network none で起動する（audited なら ENTRYPOINT を監査フックの下で）。最後に必ず削除。"""
    name = f"mii-nonet-{uuid.uuid4().hex[:10]}"
    command: list[str] = []
    start = [*LOCKED_DOWN]
    if audited:
        config = docker_env.image_info["Config"]
        start += ["--entrypoint", "python3"]
        command = ["-c", AUDITED_START, *config["Entrypoint"], *(config.get("Cmd") or [])]
    container = Container(name=name, port=CONTAINER_PORT, started_at=time.monotonic())
    try:
        docker("run", "-d", "--name", name, *start, docker_env.image, *command)
        yield container
    finally:
        docker("rm", "-f", "-v", name, check=False)


def wait_healthy(container: Container) -> float:
    """HEALTHCHECK が healthy になるまで待ち、docker run からの秒数を返す。"""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        state = container.state()
        assert state["Running"], f"container exited without network:\n{container.logs()}"
        health = state["Health"]["Status"]
        if health == "healthy":
            return time.monotonic() - container.started_at
        assert health == "starting", state["Health"]
        assert time.monotonic() < deadline, f"not healthy within {HEALTHY_WITHIN_S} s"
        time.sleep(0.2)


def ask(container: Container) -> dict[str, list[object]]:
    """コンテナの中から /health・/predict・/predict/label に問い合わせる。"""
    rows = json.dumps([row for row, _ in SPECIES])
    result = container.exec("python3", "-c", PROBE, str(CONTAINER_PORT), rows)
    assert result.returncode == 0, result.stderr
    answers: dict[str, list[object]] = json.loads(result.stdout)
    return answers


@pytest.fixture(scope="module")
def offline(docker_env: DockerEnv, record_figure: Callable[[str], None]) -> Iterator[Container]:
    """イメージのまま --network none で起動したコンテナ（healthy になってから渡す）。"""
    with offline_container(docker_env, audited=False) as container:
        elapsed = wait_healthy(container)
        record_figure(f"docker run --network none -> HEALTHCHECK healthy: {elapsed:.2f} s")
        yield container


@pytest.fixture(scope="module")
def audited(docker_env: DockerEnv) -> Iterator[Container]:
    """ENTRYPOINT を監査フックの下で --network none で起動したコンテナ。"""
    with offline_container(docker_env, audited=True) as container:
        wait_healthy(container)
        yield container


def test_only_loopback_exists(offline: Container) -> None:
    info = offline.inspect()
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert set(info["NetworkSettings"]["Networks"]) <= {"none"}
    probe = "import json, socket; print(json.dumps([n for _, n in socket.if_nameindex()]))"
    result = offline.exec("python3", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["lo"]


def test_answers_predictions_without_network(offline: Container) -> None:
    answers = ask(offline)
    assert answers["health"] == [200, {"health": "ok"}]
    status, body = answers["predict"]
    assert status == 200
    assert isinstance(body, dict)
    for proba, (_, species) in zip(body["prediction"], SPECIES, strict=True):
        assert abs(sum(proba) - 1.0) < 1e-4
        assert LABELS[proba.index(max(proba))] == species
    assert answers["label"] == [200, {"prediction": [species for _, species in SPECIES]}]


def test_runs_read_only_non_root_without_capabilities(offline: Container) -> None:
    info = offline.inspect()
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert info["Config"]["User"] == "10001:10001"
    status = offline.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["10001"] * 4
    assert int(fields["CapEff"].strip(), 16) == 0


def test_never_even_tries_the_network(audited: Container) -> None:
    assert ask(audited)["label"][0] == 200  # 推論の経路も通してからログを見る
    logs = audited.logs()
    assert "model loaded" in logs, logs
    assert NETWORK_MARK not in logs, logs


def test_the_audit_hook_sees_a_lookup(audited: Container) -> None:
    """対照実験：同じフックの下で名前を引くと記録される（届く先は無い：ループバックだけ）。"""
    write = f"open('/tmp/reach.py', 'w').write({REACH!r})"
    assert audited.exec("python3", "-c", write).returncode == 0
    result = audited.exec("python3", "-c", AUDITED_START, "/tmp/reach.py")
    assert result.returncode == 0, result.stderr
    assert f"{NETWORK_MARK} socket.getaddrinfo 'collector.observability.svc'" in result.stderr
