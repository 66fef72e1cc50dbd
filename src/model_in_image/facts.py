"""モデルとラベルから導いた、イメージとカードに記録する値（ModelFacts）。"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model_in_image.dataplane import DataPlane


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """モデルとラベルから導いた、イメージに記録する値。"""

    model_file: str
    name: str
    sha256: str
    input_name: str
    input_dtype: str
    input_width: int | None
    classes: tuple[str, ...] | None
    output_kind: str
    kind: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    postprocess: str

    @classmethod
    def of(cls, dataplane: DataPlane, name: str) -> ModelFacts:
        """読み込んだモデルの値。"""
        model = dataplane.model
        first = model.signature.inputs[0]
        return cls(
            model_file=model.model_path.name,
            name=name,
            sha256=model.sha256,
            input_name=first.name,
            input_dtype=first.dtype.name if first.is_tensor and not first.is_string else "string",
            input_width=dataplane.input_width,
            classes=dataplane.classes,
            output_kind="zipmap" if model.heads.zipmap else "tensor",
            kind=model.kind.value,
            inputs=[spec.describe() for spec in model.signature.inputs],
            outputs=[spec.describe() for spec in model.signature.outputs],
            postprocess=model.postprocess.value,
        )

    def build_args(self) -> dict[str, str]:
        """docker build の引数（Dockerfile の ARG と同じ名前。クラス・幅の無いモデルは空）。"""
        return {
            "MODEL_FILE": self.model_file,
            "MODEL_NAME": self.name,
            "MODEL_SHA256": self.sha256,
            "MODEL_CLASSES": classes_json(self.classes) if self.classes is not None else "",
            "MODEL_INPUT_WIDTH": str(self.input_width) if self.input_width is not None else "",
            "MODEL_POSTPROCESS": self.postprocess,
        }


def classes_json(classes: Sequence[str]) -> str:
    """クラス名の JSON 配列（イメージのラベルの値。空白なし、ASCII 以外もそのまま）。"""
    return json.dumps(list(classes), ensure_ascii=False, separators=(",", ":"))
