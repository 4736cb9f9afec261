# Benchmarks (included by the root Makefile). matplotlib (plots) and uvloop (a cheaper load generator) are
# benchmark-only dependencies, installed into the venv here; neither is a runtime dependency of hub.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS  ?=

.PHONY: bench bench-full bench-redis bench-deps

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q 'matplotlib>=3.7' 'uvloop>=0.19'
	touch $@

bench-deps: system-deps $(BENCH_STAMP)

# Standard subset (every scenario, shorter; the ramp on two ws nodes only): under 5 minutes on 2 cores.
# Exits non-zero when p99 >= 100 ms or a delivery is lost in broadcast or chat.
bench: bench-deps
	$(BIN)/python -m benchmarks --profile standard --gate $(BENCH_ARGS)

# Every scenario at the issue's scale, the ramp on one and on two ws nodes.
bench-full: bench-deps
	$(BIN)/python -m benchmarks --profile full --gate $(BENCH_ARGS)

# Single Redis beside a Redis Cluster (3 primaries + 3 replicas) for broadcast, chat and ramp, the replay
# buffer's price (on/off), and kill -9 of a primary on the cluster and under Sentinel (~8 minutes).
bench-redis: bench-deps
	$(BIN)/python -m benchmarks --profile redis $(BENCH_ARGS)
