"""Checkov（PyPI、版を固定）を外に出られない状態で全オーバーレイに実行し、指摘 0 件を確かめる。

抑止は k8s/checkov.yaml の理由つきのものだけで、抑止なしの指摘と過不足なく一致すること。
オーバーレイごとの Checkov の集計行は、テストの最後（CI のログ）に表示する。
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .checkov_scan import (
    TOOL_PYTHON,
    Checkov,
    Scan,
    Skips,
    expected_findings,
    find_uv,
    isolated_netns,
    load_skips,
    pinned_version,
    resource_id,
    sync_tool_env,
    with_skips,
)
from .conftest import unavailable
from .manifests import ROOT, Obj, overlay_names

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(900)]

SECURITY_DOC = ROOT / "docs" / "security.md"
NETWORK_POLICY_CHECK = "CKV2_K8S_6"
TOTALS = ("passed", "skipped", "failed")


@pytest.fixture(scope="session")
def checkov() -> Checkov:
    """tools/checkov の固定環境（無ければ uv で入れる）と、ループバックだけの名前空間。"""
    uv = find_uv()
    if uv is None:
        unavailable("uv not found: run `make install` first")
    sync = sync_tool_env(uv)
    if sync.returncode != 0:
        unavailable(f"cannot install Checkov from tools/checkov/uv.lock:\n{sync.stderr[-2000:]}")
    netns = isolated_netns()
    if netns is None:
        unavailable("cannot create a network namespace (`unshare --net` needs root or userns)")
    prefix, interfaces = netns
    return Checkov(python=TOOL_PYTHON, netns=prefix, interfaces=tuple(interfaces))


@pytest.fixture(scope="session")
def skips() -> Skips:
    """k8s/checkov.yaml の抑止（理由つき）。"""
    return load_skips()


@pytest.fixture(scope="session")
def raw_scan(
    checkov: Checkov, rendered: dict[str, list[Obj]], tmp_path_factory: pytest.TempPathFactory
) -> Scan:
    """抑止なしで、全オーバーレイを 1 回の Checkov で検査する。"""
    return checkov.scan(rendered, tmp_path_factory.mktemp("checkov-raw"))


@pytest.fixture(scope="session")
def scans(
    checkov: Checkov,
    rendered: dict[str, list[Obj]],
    skips: Skips,
    tmp_path_factory: pytest.TempPathFactory,
    record_summary: Callable[[str], None],
) -> dict[str, Scan]:
    """オーバーレイごとに抑止を入れて検査し、Checkov の集計行を記録する。"""
    result: dict[str, Scan] = {}
    for overlay, objects in rendered.items():
        annotated = with_skips(objects, skips.get(overlay, {}))
        scan = checkov.scan({overlay: annotated}, tmp_path_factory.mktemp(f"checkov-{overlay}"))
        result[overlay] = scan
        record_summary(f"{overlay}: {scan.summary_line}")
    totals = {key: sum(s.summary[key] for s in result.values()) for key in TOTALS}
    version = {s.summary["checkov_version"] for s in result.values()}
    record_summary(
        f"total over {len(result)} overlays (Checkov {', '.join(sorted(version))}, no network): "
        + ", ".join(f"{key} {totals[key]}" for key in TOTALS)
    )
    return result


# --- 外に出ないこと --------------------------------------------------------------


def test_checkov_runs_where_only_loopback_exists(checkov: Checkov) -> None:
    assert checkov.interfaces == ("lo",)


def test_checkov_never_tries_the_network(raw_scan: Scan, scans: dict[str, Scan]) -> None:
    for scan in [raw_scan, *scans.values()]:
        assert scan.network_events == []


def test_the_guard_sees_checkov_calling_home_without_the_offline_settings(
    checkov: Checkov, rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """対照実験：設定を外すと Checkov は外へ出ようとし、監査フックがそれを捕まえて止める。"""
    scan = checkov.scan({"minikube": rendered["minikube"]}, tmp_path, offline=False)
    assert scan.network_events, scan.output
    assert {e["event"] for e in scan.network_events} <= {"socket.getaddrinfo", "socket.connect"}


def test_checkov_is_the_pinned_version(raw_scan: Scan, scans: dict[str, Scan]) -> None:
    for scan in [raw_scan, *scans.values()]:
        assert scan.summary["checkov_version"] == pinned_version()


# --- 指摘と抑止 -----------------------------------------------------------------


def test_every_overlay_is_scanned(scans: dict[str, Scan], raw_scan: Scan) -> None:
    assert sorted(scans) == overlay_names()
    for overlay in overlay_names():
        assert raw_scan.findings("passed", overlay), overlay
    assert raw_scan.summary["parsing_errors"] == 0


def test_skips_name_only_rendered_overlays(skips: Skips) -> None:
    assert set(skips) <= set(overlay_names())


@pytest.mark.parametrize("overlay", overlay_names())
def test_findings_are_exactly_the_reasoned_skips(
    raw_scan: Scan, skips: Skips, overlay: str
) -> None:
    """抑止なしの指摘 = 抑止の一覧（理由の無い指摘も、もう要らない抑止も残さない）。"""
    found = raw_scan.findings("failed", overlay)
    listed = expected_findings(skips.get(overlay, {}))
    assert found - listed == set(), "findings without a reasoned skip in k8s/checkov.yaml"
    assert listed - found == set(), "skips in k8s/checkov.yaml that no longer fail: remove them"


@pytest.mark.parametrize("overlay", overlay_names())
def test_overlay_has_no_failed_check_with_its_skips(
    scans: dict[str, Scan], raw_scan: Scan, skips: Skips, overlay: str
) -> None:
    scan = scans[overlay]
    listed = expected_findings(skips.get(overlay, {}))
    assert scan.returncode == 0, scan.output
    assert scan.summary["failed"] == 0
    assert scan.summary["parsing_errors"] == 0
    assert scan.summary["skipped"] == len(listed)
    assert scan.findings("skipped") == listed
    assert scan.findings("passed") == raw_scan.findings("passed", overlay)


@pytest.mark.parametrize("overlay", overlay_names())
def test_skips_carry_their_reason_into_the_report(
    scans: dict[str, Scan], skips: Skips, overlay: str
) -> None:
    reasons = {
        (check, rid): reason
        for rid, checks in skips.get(overlay, {}).items()
        for check, reason in checks.items()
    }
    reported = {
        (r["check_id"], r["resource"]): r["check_result"]["suppress_comment"]
        for r in scans[overlay].results.get("skipped_checks", [])
    }
    assert reported == reasons


@pytest.mark.parametrize("overlay", overlay_names())
def test_network_policy_check_passes(raw_scan: Scan, overlay: str) -> None:
    passed = {check for check, _ in raw_scan.findings("passed", overlay)}
    assert NETWORK_POLICY_CHECK in passed


def test_skips_are_injected_per_resource(rendered: dict[str, list[Obj]], skips: Skips) -> None:
    """抑止は一覧にあるリソースだけに付き、元の描画結果は変えない。"""
    objects = rendered["minikube"]
    annotated = with_skips(objects, skips["minikube"])
    for before, after in zip(objects, annotated, strict=True):
        listed = skips["minikube"].get(resource_id(after), {})
        notes = after["metadata"].get("annotations", {})
        skip_values = sorted(v for k, v in notes.items() if k.startswith("checkov.io/skip"))
        assert skip_values == sorted(f"{c}={r}" for c, r in listed.items())
        assert "checkov.io/skip1" not in before["metadata"].get("annotations", {})


def test_a_reason_on_another_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkov.yaml"
    path.write_text(
        "minikube:\n  Deployment.x.y:\n    CKV_K8S_15: >-\n      folded reason\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="same line"):
        load_skips(path)


# --- 文書の数字 -----------------------------------------------------------------


def doc_row(label: str, figures: list[int]) -> re.Pattern[str]:
    """文書の表の行 | label | passed | skipped | failed |。"""
    cells = [re.escape(label), *(str(n) for n in figures)]
    return re.compile(r"^\|\s*" + r"\s*\|\s*".join(cells) + r"\s*\|", re.M)


def test_security_doc_quotes_the_measured_figures(scans: dict[str, Scan]) -> None:
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    for overlay, scan in scans.items():
        figures = [scan.summary[key] for key in TOTALS]
        assert doc_row(f"`{overlay}`", figures).search(doc), f"no row for {overlay}: {figures}"
    totals = [sum(s.summary[key] for s in scans.values()) for key in TOTALS]
    assert doc_row("計", totals).search(doc), f"no total row: {totals}"
