"""教科書（ml-system-in-actions 第 3 章 model_in_image_pattern）の提供コードの再現。

ベンチマークの比較対象。挙動を変えないことが目的なので、教科書の欠陥もそのまま残す。
"""
