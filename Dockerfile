# Model-in-Image：モデル（ONNX + ラベル + モデルカード）を焼き込んだ推論サーバーのイメージ。
#   docker build -t model-in-image-pattern:v1.0 .        （models/ の Iris。Docker Hub の python:3.13-slim）
#   make image                                           （VERSION / VCS_REF も渡す）
#   make image BASE_IMAGE=model-in-image-base:bookworm   （Docker Hub に届かない環境）
#   make image MODEL_FILE=m.onnx LABEL_FILE=l.json IMAGE=name:tag   （持ち込みモデル：docs/byom.md）
# BuildKit 専用の構文は使わない（旧ビルダーでも同じ結果になる）。
# 層の順は 依存関係（uv.lock で決まる）→ アプリ（src）→ モデル：モデルだけが違うイメージどうしは
# モデルの層とラベルだけが違う。

ARG BASE_IMAGE=python:3.13-slim
# 焼き込むモデル（ビルドコンテキストの models/ の中のファイル名）とイメージに記録する値。
# ビルドはこれらがモデル・ラベル・モデルカードと一致することをサーバーと同じ読み込みで確かめる。
# 既定値は models/ の Iris（素の docker build 用。一致は単体テストも確かめる）。
# make image はモデルから導いた値を渡す（model-in-image card --check の出力）
ARG MODEL_FILE=iris_svc.onnx
ARG MODEL_NAME=iris_svc
ARG MODEL_SHA256=d0743bea48b6cf0b837c4799d5db4ee5226260102fe2a04ef96f0fee95861b9c
ARG MODEL_CLASSES='["setosa","versicolor","virginica"]'
ARG MODEL_INPUT_WIDTH=4
# ラベルファイルのイメージの中の場所（クラス名をグラフから取るモデル・クラスの無いモデルは空）
ARG MODEL_LABELS=/model_in_image_pattern/models/label.json
# ロジットを確率にする後処理（none・softmax・sigmoid。カードに記録したものと同じ）
ARG MODEL_POSTPROCESS=none

# ---- deps：uv（PyPI から）で uv.lock どおりの依存関係だけの仮想環境を作り、削る ----
FROM ${BASE_IMAGE} AS deps

ARG UV_VERSION=0.13.9
# TLS を中継するプロキシ越しでも PyPI に届くよう、システムの CA バンドルを信頼する
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NATIVE_TLS=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/model_in_image_pattern/.venv

# strip（binutils）、numpy をソースからビルドする C/C++ コンパイラ（ベースに Python のヘッダが
# 無ければ python3-dev も）と uv はビルド用のステージの中だけ（実行用ステージには入らない）
RUN apt-get update -qq \
    && headers=$(python3 -c "import os, sysconfig; \
print('' if os.path.exists(sysconfig.get_paths()['include'] + '/Python.h') else 'python3-dev')") \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        binutils gcc g++ $headers >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv

WORKDIR /model_in_image_pattern
COPY pyproject.toml uv.lock ./
# SBOM を作る道具（uv.lock の sbom グループ。ビルド用のステージの中だけ）
RUN uv export --frozen --only-group sbom --no-emit-project --quiet -o /opt/sbom.txt \
    && uv venv --quiet /opt/sbom \
    && uv pip install --quiet --python /opt/sbom/bin/python --require-hashes -r /opt/sbom.txt

# 依存関係の層：uv.lock が変わらない限りキャッシュされる（train/dev/bench/sbom グループは入れない）。
# numpy は既定で uv.lock の sdist から BLAS なしでビルドする（scripts/image/numpy-noblas.sh、
# 28 MB 小さい代わりに初回のビルドが数分〜数十分長い）。NUMPY_BLAS=wheel なら PyPI の wheel のまま
ARG NUMPY_BLAS=none
COPY scripts/image/numpy-noblas.sh /opt/build/
RUN case "${NUMPY_BLAS}" in \
      none) uv sync --frozen --no-dev --no-default-groups --no-install-project --no-editable \
              --no-install-package numpy \
            && sh /opt/build/numpy-noblas.sh .venv ;; \
      wheel) uv sync --frozen --no-dev --no-default-groups --no-install-project --no-editable ;; \
      *) echo "NUMPY_BLAS must be none or wheel, not '${NUMPY_BLAS}'" >&2; exit 1 ;; \
    esac
# 推論に使わないファイルを除き、共有ライブラリのシンボルを落とす（scripts/image/slim.sh）
COPY scripts/image/slim.sh /opt/build/
RUN sh /opt/build/slim.sh .venv

# ---- builder：プロジェクトを非 editable で入れ、追加分と SBOM を /stage に集める ----
FROM deps AS builder

COPY README.md ./
COPY src ./src
# SBOM は実際に入っているパッケージから作る（CycloneDX JSON、再現可能な出力）
RUN uv sync --frozen --no-dev --no-default-groups --no-editable \
    && cd .venv \
    && site=$(bin/python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '.'}))") \
    && mkdir /stage \
    && cp -a --parents "$site"/model_in_image "$site"/model_in_image-*.dist-info bin/model-in-image /stage/ \
    && /opt/sbom/bin/cyclonedx-py environment --output-reproducible --of JSON \
        --pyproject ../pyproject.toml -o /stage/sbom.cdx.json /model_in_image_pattern/.venv

# ---- model：モデル・ラベル・カードを、サーバーの起動と同じ読み込みで確かめる ----
FROM builder AS model

ARG MODEL_FILE
ARG MODEL_NAME
ARG MODEL_SHA256
ARG MODEL_CLASSES
ARG MODEL_INPUT_WIDTH
ARG MODEL_LABELS
ARG MODEL_POSTPROCESS
# ビルドの文脈の models/ はモデル・カード・（あれば）ラベルだけ
COPY models/ ./models/
COPY scripts/image/bytecode.py /opt/build/
# サーバーが拒む組・記録する値と食い違う組は `model refused: 理由` でビルド失敗。
# 通ったらそのモデルでサーバーを起動して全ルートを呼び、読み込まれたモジュールを記録する
# （サーバーのログは失敗したときだけ表示する）
RUN .venv/bin/model-in-image card --check models/model_card.json \
        --model "models/${MODEL_FILE}" ${MODEL_LABELS:+--labels "$MODEL_LABELS"} \
        --expect "MODEL_FILE=${MODEL_FILE}" --expect "MODEL_NAME=${MODEL_NAME}" \
        --expect "MODEL_SHA256=${MODEL_SHA256}" --expect "MODEL_CLASSES=${MODEL_CLASSES}" \
        --expect "MODEL_INPUT_WIDTH=${MODEL_INPUT_WIDTH}" \
        --expect "MODEL_POSTPROCESS=${MODEL_POSTPROCESS}" >/dev/null \
    && { MODEL_FILEPATH="models/${MODEL_FILE}" LABEL_FILEPATH="${MODEL_LABELS}" \
        MODEL_POSTPROCESS="${MODEL_POSTPROCESS}" \
        .venv/bin/python3 /opt/build/bytecode.py record /opt/build/loaded-modules.txt \
        >/tmp/record.log || { cat /tmp/record.log; exit 1; }; }

# ---- venv：依存関係の .pyc は、サーバーが読み込むモジュールの分だけ残す ----
# （記録が同じなら、モデルが違っても結果の層は同じ内容になり、キャッシュが使われる）
FROM deps AS venv

COPY --from=model /opt/build/bytecode.py /opt/build/loaded-modules.txt /opt/build/
RUN .venv/bin/python3 /opt/build/bytecode.py prune /opt/build/loaded-modules.txt \
        "$(.venv/bin/python3 -c "import sysconfig; print(sysconfig.get_path('purelib'))")"

# ---- rootfs：ベースから apt・dpkg・perl・文書などを除く（scripts/image/slim-base.sh） ----
# 標準ライブラリの .pyc も、サーバーが読み込むモジュールの分だけ残す（ソースは残す）
FROM ${BASE_IMAGE} AS rootfs

COPY scripts/image/slim-base.sh /opt/build/
COPY --from=model /opt/build/bytecode.py /opt/build/loaded-modules.txt /opt/build/
# 固定 UID/GID 10001（useradd が無いベースでも動くよう直接追記する）
RUN sh /opt/build/slim-base.sh \
    && python3 -B /opt/build/bytecode.py prune-stdlib /opt/build/loaded-modules.txt \
        "$(python3 -B -c "import sysconfig; print(sysconfig.get_path('stdlib'))")" \
    && rm -rf /opt/build \
    && echo "app:x:10001:10001:model-in-image:/nonexistent:/usr/sbin/nologin" >>/etc/passwd \
    && echo "app:x:10001:" >>/etc/group

# ---- runtime：削った土台 1 層＋仮想環境・SBOM・モデル（コンパイラ・curl・学習用ライブラリなし） ----
# 土台はファイルごと写す（削ったものが下の層に残らない）。ベースの ENV は引き継がれないので書く
FROM scratch AS runtime

COPY --from=rootfs / /

WORKDIR /model_in_image_pattern
# 依存関係（大きい、めったに変わらない）→ アプリと SBOM（小さい）→ モデルの順に重ねる
COPY --from=venv /model_in_image_pattern/.venv ./.venv
COPY --from=builder /stage/ ./.venv/
COPY --from=model /model_in_image_pattern/models ./models

ARG MODEL_FILE
ARG MODEL_NAME
ARG MODEL_SHA256
ARG MODEL_CLASSES
ARG MODEL_INPUT_WIDTH
ARG MODEL_LABELS
ARG MODEL_POSTPROCESS
# イメージが自分のモデルの場所を持つ（Kubernetes のマニフェストはモデルごとに直さなくてよい）
ENV PATH=/model_in_image_pattern/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    VIRTUAL_ENV=/model_in_image_pattern/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MODEL_FILEPATH=/model_in_image_pattern/models/${MODEL_FILE} \
    LABEL_FILEPATH=${MODEL_LABELS} \
    MODEL_POSTPROCESS=${MODEL_POSTPROCESS} \
    MODEL_NAME=${MODEL_NAME} \
    MODEL_SHA256=${MODEL_SHA256} \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_LEVEL=INFO \
    LOG_FORMAT=TEXT

USER 10001:10001
EXPOSE 8000
EXPOSE 8081
STOPSIGNAL SIGTERM
# 追加のツール不要（python の urllib）。HTTPError/接続失敗で終了コード 1
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]

# exec 形式：SIGTERM がサーバー（PID 1）に直接届く。`docker run IMAGE info` なども可
ENTRYPOINT ["/model_in_image_pattern/.venv/bin/model-in-image"]
CMD ["serve"]

ARG BASE_IMAGE
ARG VERSION=unknown
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="model-in-image" \
      org.opencontainers.image.description="ONNX classifier ${MODEL_NAME} baked into the image, served over FastAPI + ONNX Runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.model-in-image.model.path="/model_in_image_pattern/models/${MODEL_FILE}" \
      io.model-in-image.model.name="${MODEL_NAME}" \
      io.model-in-image.model.sha256="${MODEL_SHA256}" \
      io.model-in-image.model.classes="${MODEL_CLASSES}" \
      io.model-in-image.model.input-width="${MODEL_INPUT_WIDTH}" \
      io.model-in-image.model.postprocess="${MODEL_POSTPROCESS}" \
      io.model-in-image.sbom="/model_in_image_pattern/.venv/sbom.cdx.json"
