# Deployment targets, included by the root Makefile (`-include deploy/deploy.mk`).
#   make cluster      redis-server + 2 `hub ws` + 1 `hub ingest` behind haproxy on :6001 (Ctrl-C stops it)
#   make deploy-deps  the tools tests/deploy need: promtool, haproxy, redis-server, kubernetes-validate, pyyaml
#   make k8s-rules    regenerate k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml

# Wherever the root Makefile includes this file, its own first target stays the default goal.
deploy_saved_goal := $(.DEFAULT_GOAL)

.PHONY: cluster deploy-deps k8s-rules

DEPLOY_APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
# Debian puts haproxy in /usr/sbin, which is not on a normal user's PATH.
DEPLOY_HAPROXY := $(shell command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)

cluster: $(STAMP)
	@{ command -v redis-server >/dev/null 2>&1 && [ -x "$(DEPLOY_HAPROXY)" ]; } || \
	  { $(SUDO) apt-get update -qq && $(DEPLOY_APT) redis-server haproxy; }
	HUB=$(CURDIR)/$(BIN)/hub PYTHON=$(CURDIR)/$(BIN)/python HAPROXY=$(DEPLOY_HAPROXY) deploy/cluster.sh

deploy-deps: $(STAMP)
	@{ command -v promtool >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 && \
	   [ -x "$(DEPLOY_HAPROXY)" ]; } || \
	  { $(SUDO) apt-get update -qq && $(DEPLOY_APT) prometheus redis-server haproxy; }
	@$(BIN)/python -c 'import kubernetes_validate, yaml' 2>/dev/null || \
	  $(BIN)/pip install -q 'kubernetes-validate>=1.31' 'pyyaml>=6'

# CI runs `make test`; without these tools tests/deploy fail there (they skip only outside CI).
test: deploy-deps

# The PrometheusRule is alerts.yml under `spec:`; tests/deploy fails when the two drift apart.
k8s-rules:
	{ sed '/^spec:/q' k8s/prometheusrule.yaml; sed 's/^/  /; s/^ *$$//' deploy/prometheus/alerts.yml; } \
	  > k8s/prometheusrule.yaml.new && mv k8s/prometheusrule.yaml.new k8s/prometheusrule.yaml

.DEFAULT_GOAL := $(deploy_saved_goal)
