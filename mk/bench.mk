# ベンチマークと負荷試験（issue 5）。Makefile が -include する。

BENCH_ARGS ?=
URL ?= http://127.0.0.1:8000
USERS ?= 50
SPAWN_RATE ?= 10
DURATION ?= 30s
LOADTEST_ARGS ?=

.PHONY: bench
bench: | $(UV) ## floor・教科書・本実装・peer（BentoML）を wrk で比べる（全部、約 50 分、wrk が必要）
	$(BENCH_RUN) python -m benchmarks --uv "$(UV)" $(BENCH_ARGS)

.PHONY: bench-quick
bench-quick: | $(UV) ## ベンチマークの短縮版（約 4 分）
	$(BENCH_RUN) python -m benchmarks --quick --uv "$(UV)" $(BENCH_ARGS)

.PHONY: bench-batch
bench-batch: | $(UV) ## バッチ推論（predict）と最小の numpy + ONNX Runtime のループを 100 万行の CSV で比べる
	$(SERVE_RUN) python -m benchmarks.batch $(BENCH_ARGS)

.PHONY: bench-protocols
bench-protocols: install ## gRPC と V2 REST の req/s・CPU/呼び出し・比（1・64 行 × c=1・64、約 5 分、h2load を推奨）
	$(RUN) python -m benchmarks --variants ours --loads protocols --workers 1 --uv "$(UV)" $(BENCH_ARGS)

.PHONY: bench-instructions
bench-instructions: | $(UV) ## 1 リクエストあたりの命令数を callgrind で数える（floor・ours・機能を切った ours、混んだマシンでも同じ値、約 15 分）
	$(BENCH_RUN) python -m benchmarks.instructions $(BENCH_ARGS)

.PHONY: loadtest
loadtest: | $(UV) ## 動いているサーバーに locust で負荷をかけ目標を確かめる（URL=...）
	$(BENCH_RUN) locust -f locustfile.py --headless --only-summary \
		-u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) --host $(URL) $(LOADTEST_ARGS)
