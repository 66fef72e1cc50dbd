"""適応バッチ（MAX_BATCH_SIZE・MAX_BATCH_DELAY_MS）：同時に来たリクエストを 1 回の推論にまとめる。

オフラインのバッチ推論（model_in_image.batch、CLI の predict）とは別物。
"""
