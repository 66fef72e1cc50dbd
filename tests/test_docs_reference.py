"""同梱した教科書のモデル（models/reference）が README に書いた sha256 と大きさのとおりか。"""

from __future__ import annotations

import hashlib
import re

import pytest

from support.paths import REFERENCE_DIR

README = REFERENCE_DIR / "README.md"
ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<size>[\d,]+) B \| `(?P<sha256>[0-9a-f]{64})` \|$", re.M
)


def _rows() -> list[tuple[str, int, str]]:
    rows = [
        (m["name"], int(m["size"].replace(",", "")), m["sha256"])
        for m in ROW.finditer(README.read_text(encoding="utf-8"))
    ]
    assert {name for name, _, _ in rows} == {"iris_svc.onnx", "label.json"}
    return rows


@pytest.mark.parametrize(("name", "size", "sha256"), _rows())
def test_file_matches_readme(name: str, size: int, sha256: str) -> None:
    data = (REFERENCE_DIR / name).read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha256
