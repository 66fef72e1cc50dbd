"""サーバーの状態：読み込んだモデル・メトリクス・ドレイン中か。アプリごとに 1 つ。

REST と（将来の）gRPC が共有する。HTTP は知らない。
"""

from __future__ import annotations

from dataclasses import dataclass

from model_in_image.dataplane import DataPlane
from model_in_image.errors import ModelServerError, NotReadyError
from model_in_image.metrics import Metrics

# イメージがリリースなので、モデルの版は常に 1 つ
MODEL_VERSION = "1"


@dataclass(slots=True)
class ServerState:
    """ライフスパンが dataplane を設定し、SIGTERM で draining を立てる。"""

    model_name: str
    dataplane: DataPlane | None = None
    metrics: Metrics | None = None
    draining: bool = False

    @property
    def loaded(self) -> bool:
        """モデルが読み込まれウォームアップ済みか。"""
        return self.dataplane is not None

    @property
    def ready(self) -> bool:
        """新しいリクエストを受けてよいか（読み込み済みかつドレイン中でない）。"""
        return self.dataplane is not None and not self.draining

    def require(self) -> DataPlane:
        """推論できるデータプレーンを返す（未読み込みなら 503）。"""
        if self.dataplane is None:
            raise NotReadyError("model is not loaded")
        return self.dataplane

    def lookup(self, name: str, version: str | None) -> DataPlane:
        """モデル名と版を確かめてデータプレーンを返す（不明なら 404、未読み込みなら 503）。"""
        if name != self.model_name:
            raise ModelServerError(f"unknown model: {name!r}", status_code=404)
        if version is not None and version != MODEL_VERSION:
            raise ModelServerError(
                f"model {name!r} has no version {version!r} (available: {MODEL_VERSION})",
                status_code=404,
            )
        if self.dataplane is None:
            raise NotReadyError(f"model {name!r} is not ready")
        return self.dataplane
