"""k8s/ のマニフェストを kubectl kustomize で描画し、オブジェクトを引くための小道具。"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"
BASE_DIR = K8S_DIR / "base"
OVERLAYS_DIR = K8S_DIR / "overlays"
NAMESPACE = "model-in-image"
APP = "model-in-image"
CONTAINER = "model-in-image"
TUTORIAL_IMAGE = "model-in-image-pattern:v1.0"
RENDER_TIMEOUT_S = 60

Obj = dict[str, Any]


def overlay_names() -> list[str]:
    """k8s/overlays/ の下のオーバーレイ名（kustomization.yaml があるもの）。"""
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def find_kubectl() -> str | None:
    """kubectl のパス（無ければ None）。"""
    return shutil.which("kubectl")


def render(kubectl: str, directory: Path) -> list[Obj]:
    """kubectl kustomize の結果をオブジェクトのリストにする。"""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(objects: Iterable[Obj], kind: str) -> Obj:
    """その kind のオブジェクトがちょうど 1 つあることを確かめて返す。"""
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def kinds(objects: Iterable[Obj]) -> list[str]:
    """kind の一覧（並びは描画順）。"""
    return [o["kind"] for o in objects]


def pod_spec(objects: Iterable[Obj]) -> Obj:
    """Deployment の Pod テンプレートの spec。"""
    spec: Obj = only(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: Iterable[Obj]) -> Obj:
    """推論サーバーのコンテナ。"""
    found: list[Obj] = [c for c in pod_spec(objects)["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, f"expected one container named {CONTAINER}"
    return found[0]


def pod_labels(objects: Iterable[Obj]) -> dict[str, str]:
    """Pod テンプレートのラベル。"""
    labels: dict[str, str] = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """matchLabels がラベルに一致するか（空のセレクタは「全部」なので偽にする）。"""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def network_policy(objects: Iterable[Obj]) -> Obj:
    """推論 Pod を選ぶ NetworkPolicy（ちょうど 1 つ）。"""
    objects = list(objects)
    labels = pod_labels(objects)
    found = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and selects(o["spec"]["podSelector"].get("matchLabels", {}), labels)
        and not o["spec"]["podSelector"].get("matchExpressions")
    ]
    assert len(found) == 1, (
        f"expected one NetworkPolicy selecting the model pods, found {len(found)}"
    )
    return found[0]


def env_values(ctr: Obj) -> dict[str, str]:
    """コンテナの環境変数を Pod 内で見える値にする（resourceFieldRef は上限から計算する）。"""
    values: dict[str, str] = {}
    for item in ctr.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["resourceFieldRef"]
        assert ref.get("containerName", ctr["name"]) == ctr["name"], item
        quantity = ctr["resources"][ref["resource"].split(".")[0]][ref["resource"].split(".")[1]]
        values[item["name"]] = str(resolve_resource_field(quantity, ref.get("divisor", "1")))
    return values


def resolve_resource_field(quantity: str, divisor: str) -> int:
    """kubelet と同じく quantity / divisor を切り上げた整数（CPU 用）。"""
    return max(1, math.ceil(parse_cpu(quantity) / parse_cpu(divisor)))


def parse_cpu(quantity: str | int | float) -> float:
    """CPU の quantity（"500m"、"1"、0.5）をコア数にする。"""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def parse_memory(quantity: str) -> int:
    """メモリの quantity（"300Mi" など 2 進・10 進接尾辞）をバイト数にする。"""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    assert match, f"unsupported memory quantity {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """イメージ参照を（名前, タグ, ダイジェスト）に分ける。"""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None
