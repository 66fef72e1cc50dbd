"""gRPC の一生：SIGTERM でヘルスが SERVING → NOT_SERVING（ドレイン中も推論は答える）、
正常終了（0）、ワーカー 2 つが同じ GRPC_PORT で待ち受ける（SO_REUSEPORT）、使用中のポートなら
起動しない。
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from support.grpc_v2 import (
    CALL_TIMEOUT,
    NOT_SERVING,
    SERVICE,
    SERVING,
    health_status,
    typed_request,
)
from support.net import HOST, free_port, get_status, wait_for
from support.samples import SETOSA
from support.servers import STOP_TIMEOUT, launch, start_server

pytestmark = pytest.mark.timeout(120)

# ドレインの間に確かめを終える：混んだ 2 コアでも届くよう、気づく目標（1 秒）の 5 倍より長く
DRAIN = 8.0
NOTICE_TARGET = 1.0
ONE_ROW = np.array([SETOSA], dtype=np.float32)
TCP_LISTEN = "0A"


def infer_label(target: str) -> str:
    """新しいチャネルで 1 行を推論してラベルを返す。"""
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(typed_request("X", ONE_ROW), timeout=CALL_TIMEOUT)
    label: str = response.outputs[1].contents.bytes_contents[0].decode()
    return label


def server_ready(target: str) -> bool:
    """ServerReady の答え。"""
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready: bool = stub.ServerReady(pb.ServerReadyRequest(), timeout=CALL_TIMEOUT).ready
        return ready


def test_sigterm_turns_health_not_serving_and_drains(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"SHUTDOWN_DRAIN_SECONDS": str(DRAIN)}, grpc=True)
    try:
        target = server.grpc_target
        assert health_status(target) == SERVING
        assert health_status(target, SERVICE) == SERVING
        assert server_ready(target)

        server.terminate()
        sigterm_at = time.monotonic()
        wait_for(lambda: health_status(target) == NOT_SERVING, 5 * NOTICE_TARGET, "NOT_SERVING")
        noticed_after = time.monotonic() - sigterm_at
        # ドレイン中：ヘルスと readiness は落ちるが、推論は答え続ける（HTTP と同じ）
        assert health_status(target, SERVICE) == NOT_SERVING
        assert not server_ready(target)
        assert get_status(server.port, "/readyz") == 503
        assert infer_label(target) == "setosa"
        assert time.monotonic() - sigterm_at < DRAIN, "the checks must run inside the drain"

        code = server.wait(DRAIN + STOP_TIMEOUT)
        exited_after = time.monotonic() - sigterm_at
    finally:
        server.stop()
    assert code == 0, server.log()
    assert DRAIN <= exited_after < DRAIN + 10.0  # 終わりの目標は直後、判定は広い余裕
    assert health_status(target) is None  # 終了後は待ち受けていない
    assert "gRPC stopped" in server.log()
    print(f"\ngRPC drain: NOT_SERVING {noticed_after:.2f} s after SIGTERM, exit 0 after "
          f"{exited_after:.2f} s")  # fmt: skip


def test_two_workers_share_the_grpc_port(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"WORKERS": "2"}, grpc=True)
    try:
        target = server.grpc_target
        # ワーカーがそれぞれ起動を終えるまで待つ（readiness はどちらか一方の答え）
        wait_for(
            lambda: len(listeners(server.pid, server.grpc_port)) == 2, 30.0, "two gRPC listeners"
        )
        holders = listeners(server.pid, server.grpc_port)
        assert len(set(holders.values())) == 2, holders  # 2 つのプロセスが 1 つずつ
        assert all(infer_label(target) == "setosa" for _ in range(20))
        assert health_status(target) == SERVING
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_grpc_port_in_use_stops_the_start_up(tmp_path: Path) -> None:
    """1 プロセスでは SO_REUSEPORT を使わない：他が使っているポートなら起動せず理由を示す。"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = launch(tmp_path, {"GRPC_PORT": str(port)}, port=free_port())
        try:
            code = server.wait(30.0)
        finally:
            server.stop()
    assert code != 0
    assert f"gRPC cannot listen on {HOST}:{port} (GRPC_PORT" in server.log()
    assert "Traceback" not in server.log()


def listeners(parent: int, port: int) -> dict[int, int]:
    """parent の子プロセスが持つ、port で LISTEN しているソケット（inode → pid）。"""
    inodes = listening_inodes(port)
    found: dict[int, int] = {}
    for pid in children(parent):
        for inode in socket_inodes(pid):
            if inode in inodes:
                found[inode] = pid
    return found


def listening_inodes(port: int) -> set[int]:
    """/proc/net/tcp と tcp6 から、port で LISTEN しているソケットの inode。"""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def children(parent: int) -> list[int]:
    """parent を親に持つプロセス。"""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(entry))
    return found


def socket_inodes(pid: int) -> set[int]:
    """プロセスが開いているソケットの inode。"""
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes
