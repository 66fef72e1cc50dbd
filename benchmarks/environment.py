"""計測の環境：マシンが空くのを待つ、使う実行ファイル、結果に残す CPU・版・Git の情報。"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata as pkg_metadata
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.variants import LOADS, ROOT

if TYPE_CHECKING:
    from benchmarks.measure import Plan, Runner


def gunicorn_worker_class() -> str:
    """uvicorn-worker パッケージが有ればそれ、無ければ uvicorn 同梱（非推奨）の worker。"""
    return (
        "uvicorn_worker.UvicornWorker"
        if find_spec("uvicorn_worker")
        else "uvicorn.workers.UvicornWorker"
    )


def find_uv(explicit: str | None) -> str:
    """uv の実行ファイル（--uv、環境変数 UV、PATH の順）。"""
    for candidate in (explicit, os.environ.get("UV"), shutil.which("uv")):
        if candidate and (shutil.which(candidate) or Path(candidate).exists()):
            return str(Path(shutil.which(candidate) or candidate).resolve())
    raise RuntimeError("uv not found: pass --uv PATH (make bench passes $(UV))")


def _versions() -> dict[str, str]:
    names = (
        "uvicorn",
        "fastapi",
        "starlette",
        "pydantic",
        "gunicorn",
        "onnxruntime",
        "numpy",
        "orjson",
        "uvloop",
        "httptools",
    )
    out = {}
    for name in names:
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _wrk_version(path: str) -> str:
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    return (
        (done.stdout or done.stderr).splitlines()[0].strip()
        if (done.stdout or done.stderr)
        else "?"
    )


def metadata(plan: Plan, runner: Runner, command: list[str]) -> dict[str, Any]:
    """結果 JSON の meta（環境・版・段取り）。"""
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "plan": asdict(plan),
        "host": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "versions": {**_versions(), "wrk": _wrk_version(runner.wrk_path)},
        "git": {
            "commit": _git("rev-parse", "HEAD"),
            "src_dirty": bool(_git("status", "--porcelain", "src")),
        },
        "variants": [
            {
                "name": v.name,
                "description": v.description,
                "argv": list(v.argv),
                "env": dict(v.env),
                "cwd": str(v.cwd),
            }
            for v in runner.variants
        ],
        "values": {k: v for k, v in runner.values.items() if k not in ("path",)},
        "loads": [asdict(ld) for ld in LOADS if ld.key in plan.loads],
    }
