# Soak and chaos suites (included by the root Makefile). Their short variants run inside `make test`.
#   make soak            1 hour (SOAK_MINUTES) of load on Redis + 2 `hub ws` + `hub ingest`; report in SOAK_REPORT
#   make chaos           the same load while nodes are killed, Redis restarts and the network to Redis degrades

stress_saved_goal := $(.DEFAULT_GOAL)

.PHONY: soak chaos stress-deps

# The chaos suite's network faults need nftables; the image test needs Docker and debootstrap (all Debian).
stress-deps:
	@{ command -v nft && command -v dockerd && command -v debootstrap; } >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables docker.io debootstrap; }

# CI runs `make test`; the short soak, chaos and image tests run inside it.
test: stress-deps

SOAK_MINUTES ?= 60
SOAK_REPORT  ?= soak-report.json
CHAOS_REPORT ?= chaos-report.json

soak: $(STAMP) system-deps
	$(BIN)/python -m tests.stress.soak --minutes $(SOAK_MINUTES) --report $(SOAK_REPORT)

chaos: $(STAMP) system-deps stress-deps
	$(BIN)/python -m tests.stress.chaos --report $(CHAOS_REPORT)

.DEFAULT_GOAL := $(stress_saved_goal)
