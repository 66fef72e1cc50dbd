"""python -m benchmarks のエントリポイント。"""

from benchmarks.harness import main

raise SystemExit(main())
