"""gRPC の inference.GRPCInferenceService：gRPC の読み書きだけを行い、検証と推論はデータプレーンへ。

ワイヤー形式は codecs.v2_grpc。誤り（ModelServerError）から状態コードへの変換とメトリクスの
記録は、サーバーのメソッドの表（server.py の Observer）の 1 か所で行う。
"""

from __future__ import annotations

from typing import Any

from model_in_image import __version__
from model_in_image.api.v2.endpoints import EXTENSIONS, PLATFORM, SERVER_NAME
from model_in_image.codecs import v2_grpc as codec
from model_in_image.codecs.v2 import OutputCatalog
from model_in_image.dataplane import DataPlane
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from model_in_image.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from model_in_image.state import ServerState

SERVICE_NAME = "inference.GRPCInferenceService"

_LIVE = pb.ServerLiveResponse(live=True)
_SERVER_METADATA = pb.ServerMetadataResponse(
    name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
)

# 各メソッドの context（grpc.aio.ServicerContext）は使わない：誤りは例外で伝える
Context = Any


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """V2 の gRPC。モデル名は設定から決まり、他の名前は NOT_FOUND（REST の 404）。

    メソッド名は proto の rpc 名そのもの（生成された登録関数が名前で呼ぶ）。
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._cached: tuple[DataPlane, OutputCatalog] | None = None

    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        """プロセスが応答できれば live。"""
        return _LIVE

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        """モデルが読み込み済みでドレイン中でなければ ready。"""
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """モデルの readiness（不明なモデル・版は NOT_FOUND、ドレイン中は false）。"""
        self.state.lookup(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=self.state.ready)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        """サーバー名・版・拡張（REST の GET /v2 と同じ）。"""
        return _SERVER_METADATA

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """モデルの入出力の名前・型・形（REST の GET /v2/models/{name} と同じ）。"""
        dataplane = self.state.lookup(request.name, request.version or None)
        return codec.model_metadata(dataplane, self._catalog(dataplane), PLATFORM)

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """推論（型付きの contents か raw_input_contents）。出力は種類による（REST と同じ）。"""
        dataplane = self.state.lookup(request.model_name, request.model_version or None)
        catalog = self._catalog(dataplane)
        outputs = codec.requested_outputs(request, catalog.names, catalog.available)
        tensors = await catalog.compute(codec.feeds_of(dataplane, request), outputs)
        return codec.encode_response(dataplane, request.id, outputs, tensors)

    def _catalog(self, dataplane: DataPlane) -> OutputCatalog:
        """データプレーンごとの出力の一覧（読み込み直しで作り直す）。"""
        cached = self._cached
        if cached is None or cached[0] is not dataplane:
            cached = self._cached = (dataplane, OutputCatalog(dataplane))
        return cached[1]
