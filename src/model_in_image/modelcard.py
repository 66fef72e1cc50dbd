"""モデルカード（学習時に書き出す小さな JSON）。"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_in_image.errors import ModelLoadError


class ModelCard(BaseModel):
    """学習結果の記録。sha256 は ONNX ファイルの完全性確認に使う。"""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    name: str
    model_file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input_width: int = Field(ge=1)
    classes: list[str]
    heldout_accuracy: float | None = None
    sample_input: list[list[float]] = Field(min_length=1)
    library_versions: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """ファイルから読み込む（壊れていれば ModelLoadError）。"""
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ModelLoadError(f"model card is not valid: {path}: {exc}") from exc

    def write(self, path: Path) -> None:
        """キー順を固定して書き出す（再学習でバイト単位で同じになる）。"""
        text = self.model_dump_json(indent=2)
        path.write_text(text + "\n", encoding="utf-8")
