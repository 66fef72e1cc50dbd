"""クラス名：グラフが持つクラス（コード）とラベルファイルを突き合わせる。

ラベルファイルのキーは、確率の列の番号（"0".."C-1"）か、グラフのクラスのコード
（例: "3", "7", "10" や "benign"）のどちらか。グラフが文字列のクラスを持つのに、
ラベルファイルがそれを別の順に並べていれば（target_names の順で書いた場合など）拒否する。
"""

from __future__ import annotations

from pathlib import Path

from model_in_image.errors import ModelLoadError


def resolve_classes(
    codes: tuple[str, ...] | None,
    count: int | None,
    labels: dict[str, str] | None,
    label_path: Path | None,
    *,
    string_codes: bool,
) -> tuple[str, ...] | None:
    """確率の列の順のクラス名（分からなければ None）。"""
    if labels is None:
        return codes
    if count is None:
        raise ModelLoadError(
            f"label file {label_path} was given, but the model has no classes "
            "(it is not a classifier nor a [N, C] probability/logits net)"
        )
    indices = [str(i) for i in range(count)]
    if codes is not None and set(labels) == set(codes):
        return tuple(labels[code] for code in codes)
    if set(labels) == set(indices):
        names = tuple(labels[i] for i in indices)
        if codes is not None and string_codes and set(names) == set(codes) and names != codes:
            wrong = next(i for i in range(count) if names[i] != codes[i])
            raise ModelLoadError(
                f"label file {label_path} maps column {wrong} to {names[wrong]!r}, but the "
                f"model's column {wrong} is class {codes[wrong]!r}: the model's classes in "
                f"column order are {list(codes)} (write the label file in that order, key it "
                "by class name, or leave it out: the model's own class names are used)"
            )
        return names
    expected = sorted(codes) if codes is not None and codes != tuple(indices) else indices
    also = f" or column numbers {indices}" if expected != indices else ""
    raise ModelLoadError(
        f"label file has {len(labels)} entries {sorted(labels)} but the model "
        f"has {count} classes (expected keys {expected}{also}): {label_path}"
    )
