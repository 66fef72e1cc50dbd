"""コミットした gRPC のスタブ：make grpc-stubs で作り直すと同じになり、tritonclient と同じ
プロセスで共存し（専用の記述子プール）、ワイヤー上は Open Inference Protocol そのもの。
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2 as triton_pb

from model_in_image.api.grpc_v2.service import SERVICE_NAME, InferenceService
from model_in_image.protocol._generated import grpc_predict_v2_pb2 as pb
from support.grpc_v2 import OIP_METHODS
from support.paths import REPO_ROOT

GENERATED = REPO_ROOT / "src" / "model_in_image" / "protocol" / "_generated"
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


@pytest.mark.timeout(180)
def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO_ROOT),
            "grpc-stubs",
            f"GRPC_OUT={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    regenerated = tmp_path / "model_in_image" / "protocol" / "_generated"
    for name in STUBS:
        assert (regenerated / name).read_bytes() == (GENERATED / name).read_bytes(), name


def test_descriptors_live_in_a_private_pool() -> None:
    """tritonclient も inference.* を既定のプールに登録する：同じ名前でも衝突しない。"""
    assert pb.DESCRIPTOR.package == triton_pb.DESCRIPTOR.package == "inference"
    assert pb.DESCRIPTOR.pool is not triton_pb.DESCRIPTOR.pool


def test_the_service_is_the_open_inference_protocol() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE_NAME
    assert {m.name for m in service.methods} == set(OIP_METHODS)
    assert set(vars(InferenceService)) >= set(OIP_METHODS)
    triton_service = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        theirs = triton_service.methods_by_name[method.name]
        assert method.input_type.full_name == theirs.input_type.full_name
        assert method.output_type.full_name == theirs.output_type.full_name


def test_messages_round_trip_with_tritonclient() -> None:
    ours = pb.ModelInferRequest(model_name="iris_svc", model_version="1", id="x")
    tensor = ours.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    ours.parameters["p"].string_param = "v"
    ours.outputs.add(name="label").parameters["binary_data"].bool_param = True
    ours.raw_input_contents.append(b"\x00" * 16)
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.SerializeToString() == ours.SerializeToString()
    assert theirs.inputs[0].contents.fp32_contents == ours.inputs[0].contents.fp32_contents
