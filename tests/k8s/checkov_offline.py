"""Checkov を、外へ出ようとしたら記録して止める監査フックの下で実行する（tools/checkov の python）。

使い方：python checkov_offline.py EVENTS_FILE [checkov の引数 ...]
名前解決と、ループバック以外への接続・送信を試みた時点で EVENTS_FILE に JSON 1 行を書き、
OSError にして止める（通信は始まらない）。外側ではさらにネットワークの無い名前空間で動かす。
fork した子プロセスにもフックは引き継がれる。標準ライブラリと checkov だけを使う。
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any

NAME_LOOKUPS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"}
SENDS = {"socket.connect", "socket.sendto", "socket.sendmsg"}


def is_loopback(address: Any) -> bool:
    """ループバック（127.0.0.0/8、::1）か、Unix ソケットのパスなら真。"""
    if address is None or isinstance(address, str | bytes):
        return True  # 接続済みのソケット（接続の時点で確かめた）か AF_UNIX
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


def install(events_path: str) -> None:
    """監査フックを入れる（外し方は無い：プロセスの終わりまで有効）。"""
    log = open(events_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in NAME_LOOKUPS:
            target = repr(args[0])
        elif event in SENDS and not is_loopback(args[-1]):
            target = repr(args[-1])
        else:
            return
        log.write(json.dumps({"event": event, "target": target}) + "\n")
        raise OSError(f"blocked by checkov_offline: {event} {target}")

    sys.addaudithook(hook)


def main() -> int:
    """フックを入れてから checkov を読み込み、実行する。"""
    install(sys.argv[1])
    sys.argv = ["checkov", *sys.argv[2:]]  # checkov は import 時にも sys.argv を読む
    from checkov.main import Checkov  # フックの後で読み込む（import 時の更新確認も捕まえる）

    return int(Checkov().run() or 0)


if __name__ == "__main__":
    sys.exit(main())
