"""Checkov（tools/checkov の固定環境）を、外に出られない状態で描画結果に対して実行する小道具。

二重に閉じる：ネットワークの無い名前空間（unshare --net：ループバックだけ）と、
名前解決・外への接続を試みた時点で記録して止める監査フック（checkov_offline.py）。
抑止は k8s/checkov.yaml の（オーバーレイ, リソース, チェック）ごと。描画結果の写しに
Checkov の注釈 checkov.io/skipN: ID=理由 として入れる（マニフェスト自体には入れない）。
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .manifests import K8S_DIR, ROOT, Obj

TOOL_DIR = ROOT / "tools" / "checkov"
TOOL_PYTHON = TOOL_DIR / ".venv" / "bin" / "python"
GUARD = Path(__file__).with_name("checkov_offline.py")
SKIPS_FILE = K8S_DIR / "checkov.yaml"
SYNC_TIMEOUT_S = 600
RUN_TIMEOUT_S = 300
NETNS_CANDIDATES = (
    ["unshare", "--net", "--"],  # root（CI）
    ["unshare", "--user", "--map-root-user", "--net", "--"],  # 一般ユーザー（user namespace）
)
# Checkov が外へ出る 3 か所を止める設定（checkov/main.py・common/util/banner.py で確認）
OFFLINE_ENV = {
    "BC_SKIP_MAPPING": "TRUE",  # チェック ID の対応表（guidelines）を取りに行かない
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",  # import 時の PyPI への更新確認をしない
}
OFFLINE_ARGS = [
    "--skip-download"
]  # プラットフォームの設定・ポリシーを取りに行かない（API キーも渡さない）
SCAN_ARGS = ["--framework", "kubernetes", "--compact"]
# 親の環境から渡すもの（API キーや CKV_* の設定は渡さない）
PASSED_ENV = ("PATH", "LANG", "LC_ALL")
SUMMARY_RE = re.compile(r"^Passed checks: \d+, Failed checks: \d+, Skipped checks: \d+$", re.M)
RESULTS_FILE = "results.json"

Skips = dict[str, dict[str, dict[str, str]]]  # オーバーレイ -> リソース -> チェック ID -> 理由
Finding = tuple[str, str]  # （チェック ID, リソース）


@dataclass(frozen=True)
class Scan:
    """1 回の Checkov の実行結果。"""

    returncode: int
    summary_line: str
    summary: dict[str, Any]
    results: dict[str, list[dict[str, Any]]]
    network_events: list[dict[str, str]]
    output: str

    def findings(self, kind: str, file_stem: str | None = None) -> set[Finding]:
        """failed / skipped / passed の（チェック ID, リソース）。file_stem でファイルを絞る。"""
        return {
            (r["check_id"], r["resource"])
            for r in self.results.get(f"{kind}_checks", [])
            if file_stem is None or Path(r["file_path"]).stem == file_stem
        }


@dataclass(frozen=True)
class Checkov:
    """固定環境の python、ネットワークの無い名前空間に入るコマンド、その中のインターフェース。"""

    python: Path
    netns: list[str]
    interfaces: tuple[str, ...]

    def scan(self, files: Mapping[str, list[Obj]], workdir: Path, *, offline: bool = True) -> Scan:
        """files（名前 -> オブジェクト）を workdir に書き、1 回の Checkov で検査する。"""
        workdir.mkdir(parents=True, exist_ok=True)
        for name, objects in files.items():
            text = yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True)
            (workdir / f"{name}.yaml").write_text(text, encoding="utf-8")
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        # 更新確認のキャッシュなどを持ち込まない・残さない
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(home))
        args = [a for name in files for a in ("-f", f"{name}.yaml")] + SCAN_ARGS
        if offline:
            env.update(OFFLINE_ENV)
            args += OFFLINE_ARGS
        events = workdir / "network-events.jsonl"
        events.write_text("", encoding="utf-8")
        outputs = ["--output", "cli", "--output", "json"]
        cmd = [
            *self.netns,
            str(self.python),
            "-I",
            "-X",
            "utf8",
            str(GUARD),
            str(events),
            *args,
            *outputs,
        ]
        cmd += ["--output-file-path", f"console,{RESULTS_FILE}"]
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        output = proc.stdout + proc.stderr
        lines = SUMMARY_RE.findall(proc.stdout)
        assert len(lines) == 1, f"expected one Checkov summary line:\n{output}"
        report = json.loads((workdir / RESULTS_FILE).read_text(encoding="utf-8"))
        recorded = events.read_text(encoding="utf-8").splitlines()
        return Scan(
            returncode=proc.returncode,
            summary_line=lines[0],
            summary=report["summary"],
            results=report["results"],
            network_events=[json.loads(line) for line in recorded],
            output=output,
        )


# --- 準備 ---------------------------------------------------------------------


def find_uv() -> str | None:
    """uv（uv run の中なら UV、無ければ PATH か make install の .tools）。"""
    candidates = [os.environ.get("UV"), shutil.which("uv"), str(ROOT / ".tools" / "bin" / "uv")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def sync_tool_env(uv: str) -> subprocess.CompletedProcess[str]:
    """tools/checkov の uv.lock どおりに .venv を作る（揃っていれば何もしない）。"""
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    }
    return subprocess.run(
        [uv, "sync", "--frozen", "--project", str(TOOL_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SYNC_TIMEOUT_S,
        check=False,
    )


def interfaces_inside(prefix: list[str]) -> list[str] | None:
    """prefix で入った名前空間のネットワークインターフェース（入れなければ None）。"""
    if shutil.which(prefix[0]) is None:
        return None
    probe = "import json, socket; print(json.dumps([n for _, n in socket.if_nameindex()]))"
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    names: list[str] = json.loads(proc.stdout)
    return names


def isolated_netns() -> tuple[list[str], list[str]] | None:
    """ループバックしか無い名前空間に入るコマンドと、その中のインターフェース。"""
    for prefix in NETNS_CANDIDATES:
        names = interfaces_inside(prefix)
        if names is not None:
            return prefix, names
    return None


# --- 抑止の一覧 ---------------------------------------------------------------


def load_skips(path: Path = SKIPS_FILE) -> Skips:
    """k8s/checkov.yaml を読み、形（理由が同じ行に 1 行で、"=" を含まない）を確かめる。"""
    text = path.read_text(encoding="utf-8")
    skips: Skips = yaml.safe_load(text) or {}
    lines = text.splitlines()
    for overlay, resources in skips.items():
        assert isinstance(resources, dict), f"{overlay}: expected resource: checks"
        assert resources, f"{overlay}: no resources listed"
        for resource, checks in resources.items():
            assert isinstance(checks, dict), f"{overlay}/{resource}: expected check: reason"
            assert checks, f"{overlay}/{resource}: no checks listed"
            for check, reason in checks.items():
                where = f"{path.name}: {overlay}/{resource}/{check}"
                assert re.fullmatch(r"CKV2?_K8S_\d+", check), f"{where}: not a Checkov K8s ID"
                assert isinstance(reason, str), f"{where}: the reason must be text"
                assert reason.strip(), f"{where}: no reason"
                assert "=" not in reason, f"{where}: the reason cannot contain '='"
                assert any(ln.strip() == f"{check}: {reason}" for ln in lines), (
                    f"{where}: the reason must be on the same line as the check ID"
                )
    return skips


def resource_id(obj: Obj) -> str:
    """Checkov のリソース表記 Kind.名前空間.名前。"""
    meta = obj["metadata"]
    return f"{obj['kind']}.{meta.get('namespace', 'default')}.{meta['name']}"


def with_skips(objects: Iterable[Obj], skips: dict[str, dict[str, str]]) -> list[Obj]:
    """描画結果の写しに、抑止を Checkov の注釈として入れる。"""
    result = copy.deepcopy(list(objects))
    by_id = {resource_id(o): o for o in result}
    missing = set(skips) - set(by_id)
    assert not missing, f"skips name resources that the overlay does not render: {missing}"
    for rid, checks in skips.items():
        annotations = by_id[rid]["metadata"].setdefault("annotations", {})
        for n, (check, reason) in enumerate(sorted(checks.items()), start=1):
            annotations[f"checkov.io/skip{n}"] = f"{check}={reason}"
    return result


def expected_findings(skips: dict[str, dict[str, str]]) -> set[Finding]:
    """抑止の一覧を（チェック ID, リソース）の集合にする。"""
    return {(check, rid) for rid, checks in skips.items() for check in checks}


def pinned_version() -> str:
    """tools/checkov/pyproject.toml で固定した Checkov の版。"""
    text = (TOOL_DIR / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'"checkov==([^"]+)"', text)
    assert match, "tools/checkov/pyproject.toml must pin checkov==X.Y.Z"
    return match.group(1)
