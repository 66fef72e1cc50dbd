"""E2E 用：実クラスタを kubectl で操作する小道具（すべての呼び出しに時間制限あり）。"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import load_client
from .manifests import APP, CONTAINER, NAMESPACE

E2E_FLAG = "MII_E2E_K8S"
LOADER_ENV = "MII_E2E_LOADER"
MIN_SERVER_VERSION = (1, 30)  # preStop の sleep が既定で有効になる版
LOAD_POD_LABEL = "mii-e2e-load"  # app=model-in-image にしない（Service に選ばれてしまう）
SERVICE_HOST = f"{APP}.{NAMESPACE}.svc"
PORT_FORWARD_WAIT_S = 30.0


def skip_reason(kubectl: str | None) -> str | None:
    """E2E を実行できない理由（実行できるなら None）。"""
    if os.environ.get(E2E_FLAG) != "1":
        return (
            f"opt-in: set {E2E_FLAG}=1 and KUBECONFIG to run on a real cluster (make test-e2e-k8s)"
        )
    config = os.environ.get("KUBECONFIG", "")
    if not config:
        return "KUBECONFIG is not set: point it at the cluster to test (e.g. ~/.kube/config)"
    missing = [p for p in config.split(os.pathsep) if p and not Path(p).is_file()]
    if missing:
        return f"KUBECONFIG file(s) not found: {', '.join(missing)}"
    if kubectl is None:
        return "kubectl not found on PATH"
    return None


@dataclass(frozen=True)
class Kube:
    """名前空間 model-in-image に対する kubectl。"""

    kubectl: str

    def run(
        self,
        *args: str,
        timeout: float = 60,
        stdin: str | None = None,
        check: bool = True,
        namespaced: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl を実行する（check なら失敗で AssertionError）。"""
        cmd = [self.kubectl, *(["--namespace", NAMESPACE] if namespaced else []), *args]
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def out(self, *args: str, timeout: float = 60) -> str:
        """kubectl の標準出力。"""
        return self.run(*args, timeout=timeout).stdout

    def get(self, *args: str) -> Any:
        """kubectl get ... -o json。"""
        return json.loads(self.out("get", *args, "-o", "json"))

    def server_version(self) -> tuple[int, int] | str:
        """API サーバーの (major, minor)。届かなければ kubectl のエラー文。"""
        result = self.run(
            "version", "-o", "json", "--request-timeout=15s", namespaced=False, check=False
        )
        if result.returncode != 0:
            return result.stderr.strip() or result.stdout.strip()
        server = json.loads(result.stdout)["serverVersion"]
        return int(server["major"]), int(re.sub(r"\D.*", "", server["minor"]))

    def current_context(self) -> str:
        """kubectl の現在のコンテキスト名。"""
        return self.run("config", "current-context", namespaced=False).stdout.strip()

    def namespace_exists(self) -> bool:
        """名前空間 model-in-image が既にあるか。"""
        result = self.run("get", "namespace", NAMESPACE, namespaced=False, check=False)
        return result.returncode == 0

    def app_pods(self, *, terminating: bool = False) -> list[Any]:
        """推論サーバーの Pod（terminating なら終了処理中のものも含める）。"""
        items: list[Any] = self.get("pods", "-l", f"app={APP}")["items"]
        return [p for p in items if terminating or "deletionTimestamp" not in p["metadata"]]

    def rollout(self, timeout_s: int) -> None:
        """Deployment のロールアウト完了を待つ（失敗なら状態を添える）。"""
        result = self.run(
            "rollout",
            "status",
            f"deployment/{APP}",
            f"--timeout={timeout_s}s",
            timeout=timeout_s + 30,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"rollout failed: {result.stderr}\n{self.diagnostics()}")

    def predict_lines(self, pod: str) -> int:
        """Pod のアクセスログにある推論リクエストの行数。"""
        return self.out("logs", pod, "-c", CONTAINER, timeout=60).count("POST /predict/label")

    def ready_endpoints(self) -> int:
        """Service の EndpointSlice にある ready なエンドポイントの数。"""
        slices = self.get("endpointslices", "-l", f"kubernetes.io/service-name={APP}")["items"]
        return sum(
            1
            for s in slices
            for e in s.get("endpoints") or []
            if e.get("conditions", {}).get("ready")
        )

    def diagnostics(self) -> str:
        """失敗時に添える状態（Pod、イベント）。"""
        parts = [
            self.run("get", "deploy,rs,pods,svc,endpointslices,hpa,pdb", "-o", "wide", check=False),
            self.run("get", "events", "--sort-by=.lastTimestamp", check=False),
        ]
        return "\n".join(p.stdout + p.stderr for p in parts)


def wait_until(check: Callable[[], bool], timeout: float, what: str, kube: Kube) -> None:
    """check() が真になるまで待つ（時間切れなら状態を添えて失敗）。"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{kube.diagnostics()}")


# --- イメージの読み込み -------------------------------------------------------------


def detect_loader(context: str) -> str:
    """イメージをクラスタへ入れる方法：minikube / kind / none（MII_E2E_LOADER で上書き）。"""
    forced = os.environ.get(LOADER_ENV)
    if forced:
        return forced
    if context.startswith("kind-"):
        return "kind"
    if shutil.which("minikube"):
        status = subprocess.run(
            ["minikube", "-p", context, "status", "--format={{.Host}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if status.stdout.strip() == "Running":
            return "minikube"
    return "none"  # docker-desktop などノードがローカルの Docker を共有する場合


def load_command(loader: str, context: str, image: str) -> list[str] | None:
    """イメージを読み込むコマンド（none なら None）。"""
    if loader == "minikube":
        return ["minikube", "-p", context, "image", "load", image]
    if loader == "kind":
        return ["kind", "load", "docker-image", image, "--name", context.removeprefix("kind-")]
    if loader == "none":
        return None
    raise AssertionError(f"{LOADER_ENV}={loader!r}: expected minikube, kind or none")


def local_image_exists(image: str) -> bool:
    """ローカルの Docker にイメージがあるか。"""
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


def load_image(loader: str, context: str, image: str) -> None:
    """イメージをクラスタのノードへ入れる（imagePullPolicy: Never のため）。"""
    cmd = load_command(loader, context, image)
    if cmd is None:
        return
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stderr}{result.stdout}")


# --- クラスタ内の負荷クライアント --------------------------------------------------


def load_pod(name: str, image: str, pull_policy: str, total: int, seconds: int) -> dict[str, Any]:
    """アプリと同じイメージの python3 で load_client.py を動かす Pod（restricted に適合）。"""
    script = Path(load_client.__file__).read_text(encoding="utf-8")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": LOAD_POD_LABEL}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "load",
                    "image": image,
                    "imagePullPolicy": pull_policy,
                    "command": ["python3", "-c", script],
                    "args": [SERVICE_HOST, "8000", str(total), str(seconds)],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def start_load(kube: Kube, pod: dict[str, Any]) -> str:
    """負荷 Pod を作り、動き出すまで待って名前を返す。"""
    kube.run("apply", "-f", "-", stdin=json.dumps(pod))
    name: str = pod["metadata"]["name"]
    wait_until(lambda: load_stats(kube, name) is not None, 120, f"{name} to report", kube)
    return name


def load_stats(kube: Kube, name: str) -> dict[str, Any] | None:
    """負荷 Pod の最新の累積結果（まだ無ければ None）。"""
    result = kube.run("logs", name, "--tail=3", check=False)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        return None
    stats: dict[str, Any] = json.loads(lines[-1])
    return stats


def pod_phase(kube: Kube, name: str) -> str:
    """Pod の phase。"""
    return str(kube.get("pod", name)["status"].get("phase", ""))


# --- port-forward（127.0.0.1 だけ） ----------------------------------------------


def stop(proc: subprocess.Popen[Any]) -> None:
    """自分で起動したプロセスを止める（SIGTERM、10 秒で SIGKILL）。"""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def port_forward(kube: Kube, target: str, remote_port: int) -> Iterator[int]:
    """kubectl port-forward を 127.0.0.1 の空きポートで開き、そのポート番号を渡す。"""
    cmd = [kube.kubectl, "--namespace", NAMESPACE, "port-forward", "--address", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, target, f":{remote_port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # 出力を読み続ける（パイプを詰まらせない）
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + PORT_FORWARD_WAIT_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"port-forward exited: {''.join(seen)}"
                continue
            seen.append(line)
            match = re.search(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {remote_port}", line)
            if match:
                yield int(match.group(1))
                return
        raise AssertionError(f"port-forward did not start: {''.join(seen)}")
    finally:
        stop(proc)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
