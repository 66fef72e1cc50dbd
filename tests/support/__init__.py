"""テストの共通部品（パス・環境変数・空きポート・サブプロセスのサーバー・テスト用モデル）。

pytest の pythonpath（pyproject.toml）で tests/ を import パスに入れ、`support.…` として使う。
"""
