"""サーバーの状態（モデルの準備・ドレイン中かどうか）。アプリごとに 1 つ。"""

from __future__ import annotations

from dataclasses import dataclass

from model_in_image.errors import NotReadyError
from model_in_image.inference import InferenceService
from model_in_image.metrics import Metrics


@dataclass(slots=True)
class ServerState:
    """ライフスパンが service を設定し、SIGTERM で draining を立てる。"""

    service: InferenceService | None = None
    metrics: Metrics | None = None
    draining: bool = False

    @property
    def loaded(self) -> bool:
        """モデルが読み込まれウォームアップ済みか。"""
        return self.service is not None

    @property
    def ready(self) -> bool:
        """新しいリクエストを受けてよいか（読み込み済みかつドレイン中でない）。"""
        return self.service is not None and not self.draining

    def require_service(self) -> InferenceService:
        """推論できるサービスを返す（未読み込みなら 503）。"""
        if self.service is None:
            raise NotReadyError("model is not loaded")
        return self.service
