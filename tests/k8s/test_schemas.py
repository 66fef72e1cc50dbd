"""描画したオブジェクトを Kubernetes の JSON スキーマ（1.29 以降・strict）で検証する。

kubernetes-validate が同梱するスキーマだけを使う（ネットワークには出ない：出たら失敗）。
"""

from __future__ import annotations

import copy
import socket
from typing import Any

import pytest
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

from .manifests import Obj, container, overlay_names

pytestmark = pytest.mark.k8s

OLDEST = (1, 29)
MIN_VERSIONS = 4


def supported_versions() -> list[str]:
    """同梱スキーマのうち 1.29 以降の major.minor（古い順）。"""
    found = {tuple(int(part) for part in kv.major_minor(v).split(".")) for v in kv.all_versions()}
    return [f"{major}.{minor}" for major, minor in sorted(found) if (major, minor) >= OLDEST]


VERSIONS = supported_versions()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """検証中の接続をすべて失敗させる（スキーマのダウンロードを見逃さない）。"""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def validate_all(objects: list[Obj], version: str) -> list[str]:
    """全オブジェクトを strict で検証し、エラーの説明を返す。"""
    problems = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            used = kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{name}: {where}: {exc.message}")
            continue
        except kv.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        assert used == version, f"{name} validated against {used}, not {version}"
    return problems


def test_enough_versions_ship_offline() -> None:
    assert len(VERSIONS) >= MIN_VERSIONS, VERSIONS
    assert VERSIONS[0] == "1.29"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", overlay_names())
def test_overlay_is_valid_strictly(
    rendered: dict[str, list[Obj]], overlay: str, version: str
) -> None:
    assert validate_all(rendered[overlay], version) == []


@pytest.mark.parametrize("version", [VERSIONS[0], VERSIONS[-1]])
def test_base_is_valid_strictly(rendered_base: list[Obj], version: str) -> None:
    assert validate_all(rendered_base, version) == []


def test_strict_mode_rejects_unknown_fields(rendered: dict[str, list[Obj]]) -> None:
    objects = copy.deepcopy(rendered["production"])
    container(objects)["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    problems = validate_all(objects, VERSIONS[-1])
    assert len(problems) == 1
    assert "paht" in problems[0]
