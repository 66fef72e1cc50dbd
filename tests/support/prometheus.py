"""/metrics のテキストを読む（prometheus-client のパーサー）。"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """サンプル名 name の値（ラベルの組 → 値）。"""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """ラベル 1 つで引くサンプルの値（例：feature → PSI）。"""
    return {dict(labels)[label]: value for labels, value in samples(text, name).items()}


def value(text: str, name: str) -> float | None:
    """ラベルの無いサンプルの値（無ければ None）。"""
    return samples(text, name).get((), None)
