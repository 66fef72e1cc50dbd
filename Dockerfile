# Model-in-Image：モデル（ONNX + ラベル + モデルカード）を焼き込んだ推論サーバーのイメージ。
#   docker build -t model-in-image-pattern:v1.0 .        （Docker Hub の python:3.13-slim を使う）
#   make image                                           （VERSION / VCS_REF / MODEL_SHA256 も渡す）
#   make image BASE_IMAGE=model-in-image-base:bookworm   （Docker Hub に届かない環境）
# BuildKit 専用の構文は使わない（旧ビルダーでも同じ結果になる）。

ARG BASE_IMAGE=python:3.13-slim

# ---- deps：uv（PyPI から）で uv.lock どおりの依存関係だけの仮想環境を作る ----
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

# uv はビルド用のステージの中だけ（実行用ステージには入らない）
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv

WORKDIR /model_in_image_pattern

# 依存関係の層：uv.lock が変わらない限りキャッシュされる（train/dev/bench グループは入れない）。
# 推論に使わないもの（各パッケージのテスト、ONNX Runtime のオフライン用ツールと C API 用の
# libonnxruntime.so：Python のモジュールはこれを読み込まない、約 29 MB）は除く
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-default-groups --no-install-project --no-editable \
    && site=$(.venv/bin/python3 -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && find "$site" -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization "$site"/onnxruntime/tools \
    && rm -f "$site"/onnxruntime/capi/libonnxruntime.so*

# ---- builder：プロジェクトを非 editable で入れ、追加分だけを /stage に集める ----
FROM deps AS builder

COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-default-groups --no-editable \
    && .venv/bin/python3 -c "import model_in_image.server" \
    && cd .venv \
    && site=$(bin/python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '.'}))") \
    && mkdir /stage \
    && cp -a --parents "$site"/model_in_image "$site"/model_in_image-*.dist-info bin/model-in-image /stage/

# モデルの層：モデルカードの sha256（と、渡されれば MODEL_SHA256）に一致しなければビルド失敗
ARG MODEL_SHA256=
COPY models/iris_svc.onnx models/label.json models/model_card.json ./models/
RUN set -e; cd models; \
    if [ -n "${MODEL_SHA256}" ]; then echo "${MODEL_SHA256}  iris_svc.onnx" | sha256sum -c -; fi; \
    card_sha=$(python3 -c 'import json; print(json.load(open("model_card.json"))["sha256"])'); \
    echo "${card_sha}  iris_svc.onnx" | sha256sum -c -

# ---- runtime：仮想環境とモデルだけ（コンパイラ・curl・学習用ライブラリなし） ----
FROM ${BASE_IMAGE} AS runtime

# 固定 UID/GID 10001（useradd が無いベースでも動くよう直接追記する）
RUN echo "app:x:10001:10001:model-in-image:/nonexistent:/usr/sbin/nologin" >>/etc/passwd \
    && echo "app:x:10001:" >>/etc/group

WORKDIR /model_in_image_pattern
# 依存関係（大きい、めったに変わらない）→ アプリ（小さい）→ モデルの順に重ねる
COPY --from=deps /model_in_image_pattern/.venv ./.venv
COPY --from=builder /stage/ ./.venv/
COPY --from=builder /model_in_image_pattern/models ./models

ARG MODEL_SHA256=
ENV PATH=/model_in_image_pattern/.venv/bin:${PATH} \
    VIRTUAL_ENV=/model_in_image_pattern/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MODEL_FILEPATH=/model_in_image_pattern/models/iris_svc.onnx \
    LABEL_FILEPATH=/model_in_image_pattern/models/label.json \
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
      org.opencontainers.image.description="Iris SVC (ONNX) baked into the image, served over FastAPI + ONNX Runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.model-in-image.model.path="/model_in_image_pattern/models/iris_svc.onnx" \
      io.model-in-image.model.sha256="${MODEL_SHA256}"
