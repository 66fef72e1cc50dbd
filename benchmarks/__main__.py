"""python -m benchmarks のエントリポイント。"""

from benchmarks.cli import main

raise SystemExit(main())
