"""待ち受けソケットを閉じる前に、カーネルに新しい TCP ハンドシェイクを始めさせない（Linux）。

待ち受けソケットを閉じると、accept キューに残った接続（カーネルはハンドシェイクを終えて
いるので、クライアントはリクエストを送った後かもしれない）はリセットされる。最後に accept
してから閉じるまでの一瞬にも、カーネルは新しい接続を完了させられる。そこで閉じる前に
classic BPF のフィルタ（SO_ATTACH_FILTER）を付け、SYN だけのセグメント（新しい接続の始め）を
捨てさせる。クライアントは SYN を再送し（1 秒後）、そのときにはソケットが無いので接続を
拒まれる：リクエストを送る前なので、別の Pod・ワーカーに安全に繋ぎ直せる。

全部を捨てるフィルタにしないのは、始まっていたハンドシェイク（SYN は受け取り、最後の ACK を
待っているもの）の ACK もこのソケットのフィルタを通るため：ACK まで捨てると、クライアントは
接続できたと思ってリクエストを送り、閉じたときにリセットされる。SYN だけを捨てれば、それらは
猶予（HANDSHAKE_SETTLE_SECONDS）のうちに完了してキューに入り、閉じる前に accept できる。

SO_REUSEPORT のグループでは、SYN はフィルタの前にハッシュでソケットが選ばれるので、閉じかけの
ソケットに当たった SYN は他のワーカーに回らずに捨てられる（再送のときに残りのワーカーへ行く）。
ロールアウトでは全ワーカーが同時に閉じるので、これで足りる。
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys

logger = logging.getLogger(__name__)

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# フィルタを付けてから、始まっていたハンドシェイクが完了するのを待つ秒数（同じ Pod・ノードの
# 中の往復は 1 ms 未満）
HANDSHAKE_SETTLE_SECONDS = 0.05
_SYN, _ACK = 0x02, 0x10
# ソケットのフィルタが見るのは TCP ヘッダから（IPv4・IPv6 とも）。13 バイト目がフラグ
DROP_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]：フラグ
    (0x54, 0, 0, _SYN | _ACK),  # and #0x12
    (0x15, 0, 1, _SYN),  # jeq #SYN（ACK なし）なら次へ、それ以外は 1 つ飛ばす
    (0x06, 0, 0, 0),  # ret #0：捨てる
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1：そのまま受け取る
)


def refuse_new_handshakes(sock: socket.socket) -> bool:
    """SYN だけのセグメントを捨てるフィルタを付ける。付けられなければ False（Linux 以外など）。"""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in DROP_SYN))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }（カーネルが写す）
    fprog = struct.pack("HP", len(DROP_SYN), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        logger.debug("cannot stop new handshakes before closing the listener: %s", exc)
        return False
    return True
