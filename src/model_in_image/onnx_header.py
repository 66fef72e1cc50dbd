"""ONNX ファイルが記録している作り手と opset（モデルカードの library_versions）。

onnx パッケージ（学習用の依存）を使わず、提供の依存にある protobuf で ModelProto の
必要なフィールドだけを読む。番号は onnx.proto の ModelProto・OperatorSetIdProto と同じ。
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from model_in_image.errors import ModelLoadError

_PACKAGE = "model_in_image.onnx_header"
_FIELD = descriptor_pb2.FieldDescriptorProto
DEFAULT_DOMAIN = "ai.onnx"


@cache
def _model_header() -> Any:
    """ModelProto の一部（ir_version・producer_name・producer_version・opset_import）の型。"""
    proto = descriptor_pb2.FileDescriptorProto(
        name="model_in_image_onnx_header.proto", package=_PACKAGE, syntax="proto2"
    )
    opset = proto.message_type.add(name="OperatorSetId")
    opset.field.add(name="domain", number=1, type=_FIELD.TYPE_STRING)
    opset.field.add(name="version", number=2, type=_FIELD.TYPE_INT64)
    model = proto.message_type.add(name="ModelHeader")
    model.field.add(name="ir_version", number=1, type=_FIELD.TYPE_INT64)
    model.field.add(name="producer_name", number=2, type=_FIELD.TYPE_STRING)
    model.field.add(name="producer_version", number=3, type=_FIELD.TYPE_STRING)
    model.field.add(
        name="opset_import",
        number=8,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_REPEATED,
        type_name=f".{_PACKAGE}.OperatorSetId",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ModelHeader"))


def library_versions(path: Path) -> dict[str, str]:
    """作り手の版（例 skl2onnx: 1.7.0）、ドメインごとの opset、ONNX の IR の版。

    キーは作り手の名前、`<ドメイン>-opset`（既定のドメインは ai.onnx）、`onnx-ir-version`。
    記録されていない値は書かない（作り手の版だけが無ければ unknown）。
    """
    header = _model_header()()
    try:
        header.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ModelLoadError(f"cannot read the ONNX header of {path}: {exc}") from exc
    versions: dict[str, str] = {}
    if header.producer_name:
        versions[header.producer_name] = header.producer_version or "unknown"
    for opset in header.opset_import:
        versions[f"{opset.domain or DEFAULT_DOMAIN}-opset"] = str(opset.version)
    if header.ir_version:
        versions["onnx-ir-version"] = str(header.ir_version)
    return versions
