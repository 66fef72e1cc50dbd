"""イメージのバイトコード（.pyc）を、サーバーが読み込むモジュールの分だけ残す。

  python3 bytecode.py record OUT
      焼き込むモデルでサーバーを 127.0.0.1 の空きポートに起動し（設定は環境変数）、OpenAPI に
      載っているすべてのルートと /docs・/redoc に要求を送ってから、読み込まれたモジュールの
      .pyc の場所（site-packages と標準ライブラリの絶対パス）を OUT に 1 行ずつ書く。
  python3 bytecode.py prune LIST SITE
      SITE の .pyc のうち LIST に無いものを消す。LIST にあるものはソースから列の位置の表
      （debug ranges）なしでコンパイルし直してソースの隣に置き、ソース（.py）を消す（ソースなしの
      import。同じ内容を 2 度持たない。行番号は残る）。
  python3 bytecode.py prune-stdlib LIST STDLIB
      標準ライブラリの __pycache__ の .pyc のうち LIST に無いものを消す（ソースは残す）。

読み込まれないモジュールはソース（.py）が残るので、後で使われてもその場でコンパイルされて動く
（その import が少し遅くなるだけ）。起動と推論の経路は .pyc のまま速い（トレースバックにその
行のソースは出ない）。
Dockerfile の model ステージ（record）、venv ステージ（prune）、rootfs ステージ（prune-stdlib）が
使う。標準ライブラリだけで書く。
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import marshal
import os
import socket
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0
# ソースを読むパッケージ（site-packages からの相対パスの接頭辞）。anyio の遅延 import は
# __init__ のソースを ast で読み、読めないとすべてを先に import する（起動が遅くなる）
SOURCE_READERS = ("anyio/",)
# 複数ワーカー（uvicorn の spawn の子プロセス）の起動が読むモジュール
MULTIPROCESS_MODULES = (
    "uvicorn.supervisors.multiprocess",
    "multiprocessing.spawn",
    "multiprocessing.popen_spawn_posix",
    "multiprocessing.resource_tracker",
)


def _send(base: str, method: str, path: str, body: bytes | None = None) -> None:
    """要求を送る（応答の状態は問わない：読み込まれるモジュールを集めるのが目的）。"""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(base + path, body, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.read()


def _example_path(path: str, parameters: list[dict[str, Any]]) -> str:
    for param in parameters:
        if param.get("in") == "path":
            example = param.get("example", param.get("schema", {}).get("example", "x"))
            path = path.replace("{" + param["name"] + "}", str(example))
    return path


def _bodies(operation: dict[str, Any], sample: list[list[float]]) -> list[bytes]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    examples = [content["example"]] if "example" in content else []
    examples += [e.get("value") for e in content.get("examples", {}).values()]
    return [json.dumps(e).encode() for e in examples] + [
        json.dumps({"data": sample}).encode(),
        b'{"data": [[1e999]]}',
        b"{",
    ]


def exercise(base: str) -> None:
    """OpenAPI のすべてのルート（例の値で）と、文書・資産・存在しないパスに要求を送る。"""
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as response:
        spec = json.loads(response.read())
    with urllib.request.urlopen(base + "/metadata", timeout=10) as response:
        sample = json.loads(response.read())["data_sample"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            url = _example_path(path, operation.get("parameters", []))
            if method == "get":
                _send(base, "GET", url)
                _send(base, "HEAD", url)
            else:
                for body in _bodies(operation, sample):
                    _send(base, method.upper(), url, body)
    for path in ("/docs", "/redoc", "/docs-assets/favicon.png", "/no-such-path"):
        _send(base, "GET", path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _roots() -> tuple[Path, Path]:
    """site-packages と標準ライブラリの場所。"""
    return Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("stdlib"))


def _imported_pycs(roots: tuple[Path, ...]) -> set[str]:
    """いま読み込まれているモジュールの .pyc（監査フックより前に import したものも拾う）。"""
    found = set()
    for module in list(sys.modules.values()):
        cached = getattr(module, "__cached__", None)
        if isinstance(cached, str) and Path(cached).is_file():
            path = Path(cached)
            if any(path.is_relative_to(root) for root in roots):
                found.add(str(path))
    return found


def record(out: Path) -> None:
    """サーバーを起動して要求を送り、読み込まれた .pyc の場所を書く。

    読んだ .pyc は監査フック（open イベント）で集める：import に失敗したモジュール
    （uvicorn が試す任意の依存など）の .pyc も、起動のたびに読まれるので残す。
    このスクリプト自身が使う urllib.request などはイメージのヘルスチェックも使う。
    """
    roots = _roots()
    loaded: set[str] = set()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].endswith(".pyc"):
            path = Path(args[0])
            if any(path.is_relative_to(root) for root in roots):
                loaded.add(str(path))

    sys.addaudithook(hook)
    import uvicorn

    import model_in_image.cli  # noqa: F401 - イメージの ENTRYPOINT（CLI）が読むモジュールも残す
    from model_in_image.server import uvicorn_config
    from model_in_image.settings import Settings

    # 複数ワーカー（WORKERS > 1）の起動が読むモジュール
    for name in MULTIPROCESS_MODULES:
        importlib.import_module(name)
    # JSON ログとアクセスログの経路も通す。gRPC は空きポートで（ビルドはホストのネットワーク）
    settings = Settings(log_format="JSON", access_log=True, grpc_port=_free_port())
    server = uvicorn.Server(uvicorn_config(settings, multiprocess=False))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sys.exit("bytecode record: the server did not start")
        time.sleep(0.05)
    try:
        exercise(base)
    finally:
        server.should_exit = True
        thread.join(30)
    loaded |= _imported_pycs(roots)
    out.write_text("".join(f"{name}\n" for name in sorted(loaded)), encoding="utf-8")
    counts = ", ".join(f"{sum(1 for n in loaded if n.startswith(str(r)))} in {r}" for r in roots)
    print(f"bytecode record: .pyc read: {counts}", file=sys.stderr)


def _source_of(pyc: Path) -> Path:
    """__pycache__/NAME.TAG.pyc のソース NAME.py。"""
    return pyc.parent.parent / (pyc.name.split(".", 1)[0] + ".py")


def _sourceless(pyc: Path, site: Path) -> tuple[int, int]:
    """ソースを NAME.pyc にコンパイルし直し、.py と元の .pyc を消す（ソースと新しい .pyc の量）。

    列の位置の表を持たない（-X no_debug_ranges で実行する）。行番号と co_filename は元のまま。
    """
    source = _source_of(pyc)
    if pyc.parent.name != "__pycache__" or not source.is_file():
        return 0, 0
    if str(source.relative_to(site)).startswith(SOURCE_READERS):
        return 0, 0
    stat = source.stat()
    code = compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
    # タイムスタンプ形式のヘッダ（ソースなしの import は中身を照合しない）
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    source.with_suffix(".pyc").write_bytes(header + marshal.dumps(code))
    pyc.unlink()
    source.unlink()
    return stat.st_size, source.with_suffix(".pyc").stat().st_size


def _needs_no_debug_ranges() -> None:
    """列の位置の表なしでコンパイルするよう、-X no_debug_ranges で実行し直す。"""
    if "no_debug_ranges" not in sys._xoptions:
        os.execv(sys.executable, [sys.executable, "-X", "no_debug_ranges", *sys.argv])


def prune(keep_list: Path, site: Path) -> None:
    """keep_list に無い .pyc を消し、ある .pyc はソースなしにする。"""
    _needs_no_debug_ranges()
    keep = set(keep_list.read_text(encoding="utf-8").split())
    kept = removed = kept_bytes = new_bytes = removed_bytes = source_bytes = 0
    for pyc in list(site.rglob("*.pyc")):
        size = pyc.stat().st_size
        if str(pyc) in keep:
            kept, kept_bytes = kept + 1, kept_bytes + size
            source_size, new_size = _sourceless(pyc, site)
            source_bytes += source_size
            new_bytes += new_size or size
        else:
            pyc.unlink()
            removed, removed_bytes = removed + 1, removed_bytes + size
    _remove_empty_caches(site)
    print(
        f"bytecode prune: kept {kept} .pyc ({kept_bytes / 1e6:.1f} MB, "
        f"{new_bytes / 1e6:.1f} MB without debug ranges) without their sources "
        f"({source_bytes / 1e6:.1f} MB), removed {removed} ({removed_bytes / 1e6:.1f} MB)",
        file=sys.stderr,
    )


def prune_stdlib(keep_list: Path, stdlib: Path) -> None:
    """標準ライブラリの .pyc のうち keep_list に無いものを消す（残す .pyc はソースの隣のまま）。"""
    keep = set(keep_list.read_text(encoding="utf-8").split())
    kept = removed = removed_bytes = 0
    for pyc in list(stdlib.rglob("__pycache__/*.pyc")):
        if "site-packages" in pyc.parts or "dist-packages" in pyc.parts:
            continue
        if str(pyc) in keep:
            kept += 1
        else:
            removed, removed_bytes = removed + 1, removed_bytes + pyc.stat().st_size
            pyc.unlink()
    _remove_empty_caches(stdlib)
    print(
        f"bytecode prune-stdlib: kept {kept} .pyc, removed {removed} "
        f"({removed_bytes / 1e6:.1f} MB) from {stdlib}",
        file=sys.stderr,
    )


def _remove_empty_caches(root: Path) -> None:
    for cache in list(root.rglob("__pycache__")):
        if not any(cache.iterdir()):
            cache.rmdir()


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["record", out]:
            record(Path(out))
        case ["prune", keep_list, site]:
            prune(Path(keep_list), Path(site))
        case ["prune-stdlib", keep_list, stdlib]:
            prune_stdlib(Path(keep_list), Path(stdlib))
        case _:
            sys.exit(__doc__)
