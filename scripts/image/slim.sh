#!/bin/sh
# 依存関係の仮想環境（Dockerfile の deps ステージ）から推論に使わないファイルを除き、
# 共有ライブラリのシンボル表とデバッグ情報を落とす。削るたびに減った量を表示し（ビルドのログに
# 残る）、最後に残したものが動くことを確かめる。
#   sh slim.sh VENV
set -eu
venv=$1
site=$("$venv/bin/python3" -c "import sysconfig; print(sysconfig.get_path('purelib'))")

size() { du -sb "$venv" | cut -f1; }
# trim 説明 関数：関数を実行し、減ったバイト数（k = 1000）を表示する
trim() {
  before=$(size)
  "$2"
  after=$(size)
  echo "slim: $1: -$(((before - after) / 1000))k bytes ($((after / 1000))k left)"
}

# 各パッケージのテスト、ONNX Runtime のオフライン用ツールと C API 用の libonnxruntime.so
# （Python のモジュールはこれを読み込まない）
tests_and_tools() {
  find "$site" -type d -name tests -prune -exec rm -rf {} +
  rm -rf "$site/onnxruntime/transformers" "$site/onnxruntime/quantization" "$site/onnxruntime/tools"
  rm -f "$site"/onnxruntime/capi/libonnxruntime.so*
}

# 実行時に読まないもの：型スタブ、Cython と C のソース・ヘッダ、静的ライブラリ
sources_and_stubs() {
  find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
    -o -name '*.c' -o -name '*.h' -o -name '*.a' \) -delete
}

# numpy：拡張モジュールのビルド用（f2py・distutils・ヘッダ）とテスト専用の拡張モジュール
numpy_build_and_test() {
  rm -rf "$site/numpy/f2py" "$site/numpy/distutils" "$site/numpy/_pyinstaller" \
    "$site/numpy/_core/include" "$site/numpy/_core/lib" "$site/numpy/conftest.py" "$venv/bin/f2py"
  rm -f "$site"/numpy/_core/_simd.* "$site"/numpy/_core/_*_tests.*
}

# numpy の、サーバーも依存関係も import しないサブパッケージ（np.random などは遅延 import で、
# 使わなければ読まれない。src からの利用は単体テスト tests/image/test_slim_rules.py が拒む）
numpy_unused_subpackages() {
  for sub in $NUMPY_REMOVED; do rm -rf "${site:?}/numpy/$sub"; done
}
NUMPY_REMOVED="random testing fft polynomial ma"

# 推論の経路が import しないパッケージ（メタデータ .dist-info は残し、SBOM と一致させる）：
# - pydantic.v1：pydantic の v1 互換層
# - flatbuffers：ONNX Runtime のオフライン用ツール（上で消した tools）だけが使う
# - packaging：ONNX Runtime の onnxruntime.backend だけが使う
# - onnxruntime.backend：ONNX の backend テスト用の API（onnx パッケージが要り、イメージに無い）
# - onnxruntime.datasets：例のモデル
# - grpc.beta・grpc.framework：gRPC の旧 API（生成したスタブも grpc_health も使わない）
# - urllib3.contrib.emscripten：ブラウザの中の Python（Pyodide）用
# 消した後、残ったソースがどれかを import していればビルドを止める（unreferenced）
unused_packages() {
  rm -rf "$site/pydantic/v1" "$site/flatbuffers" "$site/packaging" \
    "$site/onnxruntime/backend" "$site/onnxruntime/datasets" \
    "$site/grpc/beta" "$site/grpc/framework" "$site/urllib3/contrib/emscripten"
}
REMOVED_MODULES="pydantic.v1 flatbuffers packaging onnxruntime.backend onnxruntime.datasets \
grpc.beta grpc.framework urllib3.contrib.emscripten"

# 残ったソース（.py）に、消したモジュールの絶対 import が無いこと。例外はサーバーが通らない
# 経路の遅延 import だけ（ファイル:モジュール）：
# - pydantic の _generate_schema.py：v1 流の独自型（__get_validators__）を見分けるときだけ
# 相対 import は調べて確かめた：urllib3 の __init__.py の .contrib.emscripten は
# sys.platform == "emscripten" のときだけ（ほかは親のパッケージからも読まれない）
ALLOWED_REFERENCES="pydantic/_internal/_generate_schema.py:pydantic.v1"
unreferenced() {
  for module in $REMOVED_MODULES; do
    pattern="^[[:space:]]*(from|import)[[:space:]]+$(echo "$module" | sed 's/\./\\./g')([[:space:].]|$)"
    found=$(cd "$site" && grep -rlE --include='*.py' "$pattern" . | sed 's|^\./||' |
      while read -r file; do
        echo "$ALLOWED_REFERENCES" | grep -qxF "$file:$module" || echo "$file"
      done)
    if [ -n "$found" ]; then
      echo "slim: $module was removed but is still imported by: $found" >&2
      exit 1
    fi
  done
}

# プロトコルバッファの定義（.proto）：実行時は生成済みの *_pb2.py を使い、.proto は読まない
proto_sources() {
  find "$site" -type f -name '*.proto' -delete
}

# charset_normalizer の mypyc でコンパイルした拡張モジュール：同じ内容の .py が隣にあり、
# それが使われる（requests が OTLP の送信で応答の文字コードを推定するときだけ読む）
charset_normalizer_compiled() {
  rm -f "$site"/charset_normalizer/md.cpython-*.so "$site"/charset_normalizer/cd.cpython-*.so \
    "$site"/charset_normalizer/md__mypyc.cpython-*.so
}

# 共有ライブラリ：シンボル表とデバッグ情報（動的リンクに要るシンボルは残る）。auditwheel が
# 同梱した *.libs/ のライブラリは patchelf で書き換えてあり、strip すると読み込めなくなるので除く
strip_shared_objects() {
  find "$site" -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} +
}

echo "slim: $(($(size) / 1000))k bytes before"
trim "tests, ONNX Runtime tools and C API library" tests_and_tools
trim "type stubs, Cython/C sources and headers" sources_and_stubs
trim "numpy build tools and test-only extensions" numpy_build_and_test
trim "numpy subpackages nothing imports ($NUMPY_REMOVED)" numpy_unused_subpackages
trim "packages the serving path never imports ($REMOVED_MODULES)" unused_packages
unreferenced
trim "protocol buffer sources (.proto)" proto_sources
trim "charset_normalizer compiled modules (the same .py next to them)" charset_normalizer_compiled
trim "strip --strip-unneeded on shared objects" strip_shared_objects

# 残したものが動くこと（BLAS と LAPACK を通る演算、イベントループ、HTTP パーサ）
"$venv/bin/python3" -c '
import numpy as np, onnxruntime, uvloop, httptools, pydantic_core, msgspec, orjson, grpc
import charset_normalizer, requests, google.protobuf, grpc_health.v1.health
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
assert charset_normalizer.from_bytes("プロトコル".encode("utf-8")).best().encoding == "utf_8"
a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
assert np.allclose((a @ np.eye(64, dtype=np.float32)), a)
assert np.allclose(np.linalg.inv(np.eye(8) * 2), np.eye(8) / 2)
uvloop.new_event_loop().close()
print("slim: numpy", np.__version__, "onnxruntime", onnxruntime.__version__, "ok")
'
