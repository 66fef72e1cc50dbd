#!/bin/sh
# 実行用ステージの土台（BASE_IMAGE）から、実行に要らないものを除く（あるものだけ。Docker Hub の
# python:slim でも Debian パッケージで作ったベースでも同じ）：apt・dpkg・debconf・perl、文書・
# man・info・ロケールの翻訳、Python の標準ライブラリのうちサーバーが使わないもの、pip と
# venv 用の wheel、glibc の iconv 用の文字コード変換モジュール。
# OS パッケージの一覧（/var/lib/dpkg/status）は脆弱性スキャナのために残す。
#   sh slim-base.sh
set -eu
size() { du -sxk / 2>/dev/null | cut -f1; }
before=$(size)
rm -rf /usr/bin/apt* /usr/lib/apt /usr/lib/*-linux-gnu/libapt-* /etc/apt /var/lib/apt /var/cache/apt \
  /usr/bin/dpkg* /etc/dpkg /usr/share/dpkg /usr/lib/dpkg /var/cache/debconf /usr/share/debconf \
  /usr/bin/debconf* /usr/bin/perl* /usr/lib/*-linux-gnu/perl* /usr/share/perl* /usr/lib/*-linux-gnu/perl5 \
  /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian /var/log/*
# venv に pip を入れるための wheel（Debian の python3-venv）と pip そのもの（python:slim は
# システムの site-packages に持つ）：実行用ステージではパッケージを入れない
rm -rf /usr/share/python-wheels /usr/local/bin/pip* /usr/local/lib/python3.*/site-packages/pip \
  /usr/local/lib/python3.*/site-packages/pip-*.dist-info
# glibc の iconv(3) が読む文字コード変換モジュール（8 MB）：Python は自前のコーデックを使い、
# iconv を呼ぶものは実行用ステージに無い（UTF-8 などの組み込みの変換は glibc の本体にある）
rm -rf /usr/lib/*-linux-gnu/gconv
# dpkg のデータベースは status だけ残す（info/ の一覧とスクリプトが大半）
find /var/lib/dpkg -mindepth 1 -maxdepth 1 ! -name 'status*' -exec rm -rf {} + 2>/dev/null || true
for lib in /usr/lib/python3.* /usr/local/lib/python3.*; do
  [ -d "$lib" ] || continue
  rm -rf "$lib/lib2to3" "$lib/pydoc_data" "$lib/idlelib" "$lib/tkinter" "$lib/turtledemo" \
    "$lib/ensurepip" "$lib/test" "$lib/unittest/test" "$lib"/config-*/*.a
done
echo "slim-base: -$(((before - $(size)) / 1000)) MB"
python3 -c 'import asyncio, ssl, sqlite3, json, urllib.request; print("slim-base: python ok")' 2>&1 \
  || python3 -c 'import asyncio, ssl, json, urllib.request; print("slim-base: python ok")'
