# Soak and chaos suites (included by the root Makefile). Their short variants run inside `make test`.
#   make soak            1 hour (SOAK_MINUTES) of load on Redis + 2 `hub ws` + `hub ingest`; report in SOAK_REPORT
#   make chaos           the same load while nodes are killed, Redis restarts and the network to Redis degrades

stress_saved_goal := $(.DEFAULT_GOAL)

.PHONY: soak chaos

SOAK_MINUTES ?= 60
SOAK_REPORT  ?= soak-report.json
CHAOS_REPORT ?= chaos-report.json

soak: $(STAMP) system-deps
	$(BIN)/python -m tests.stress.soak --minutes $(SOAK_MINUTES) --report $(SOAK_REPORT)

chaos: $(STAMP) system-deps
	$(BIN)/python -m tests.stress.chaos --report $(CHAOS_REPORT)

.DEFAULT_GOAL := $(stress_saved_goal)
