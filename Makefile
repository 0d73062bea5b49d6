# Twinfleet — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DAPR_RUNTIME_VERSION := 1.18.0
# Components left out of the daprd build (unused here; their modules are not on the package proxy).
DAPR_EXCLUDE_COMPONENTS := pubsub_pulsar
TWINFLEET_CACHE ?= $(HOME)/.cache/twinfleet
DAPRD := $(TWINFLEET_CACHE)/bin/daprd-$(DAPR_RUNTIME_VERSION)
# The device agent's sidecar: only the components the agent's configuration uses (MQTT to the
# cloud broker, SQLite state; name resolution and the Kubernetes secret store of a K3s pod).
DEVICE_DAPR_COMPONENTS := pubsub_mqtt3 state_sqlite nameresolution_mdns nameresolution_kubernetes secretstores_kubernetes
DEVICE_DAPRD := $(TWINFLEET_CACHE)/bin/daprd-device-$(DAPR_RUNTIME_VERSION)
LOADGEN := $(TWINFLEET_CACHE)/bin/loadgen
# Azurite, the local Azure Blob endpoint (npm; 3.35 runs on Node 20), and the broker plugin that
# strips the AWS IoT SDK's username suffix (gcc, keyed by its source's hash), both in the cache.
AZURITE_VERSION := 3.35.0
AZURITE := $(TWINFLEET_CACHE)/azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob
FLOORGO := $(TWINFLEET_CACHE)/bin/floorgo
# Tools for the Helm charts (make tools): helm and kubeconform from their Go modules, the
# Kubernetes JSON schemas of this minor, the Dapr CRD schemas and the ServiceMonitor CRD's, all
# offline, in the cache.
HELM_VERSION := 3.22.0
KUBECONFORM_VERSION := 0.8.0
KUBERNETES_VERSION := 1.31.0
PROMETHEUS_OPERATOR_VERSION := 0.85.0
HELM := $(TWINFLEET_CACHE)/bin/helm-$(HELM_VERSION)
KUBECONFORM := $(TWINFLEET_CACHE)/bin/kubeconform-$(KUBECONFORM_VERSION)
# The OIDC provider the access tests get real client-credentials tokens from (ORY Hydra, its Go module).
HYDRA_VERSION := 2.3.0
HYDRA := $(TWINFLEET_CACHE)/bin/hydra-$(HYDRA_VERSION)
# The local tracing backend (the trace test): an OpenTelemetry Collector with OTLP in and the file
# exporter, built by the collector's builder; keyed by version and the builder config's hash.
OTELCOL_VERSION := 0.165.0
OTELCOL := $(TWINFLEET_CACHE)/bin/otelcol-twinfleet-$(OTELCOL_VERSION)-$(shell sha256sum tools/otelcol/builder.yaml | cut -c1-12)
# The local single-node Kubernetes cluster (make cluster): its binaries from the k8s.io/kubernetes
# Go module (1.34: the last minor whose kubelet runs on cgroup v1 by default), crictl, a trimmed
# CoreDNS and Dapr's control plane, built into the cache and reused while their versions stand.
CLUSTER_KUBERNETES_VERSION := 1.34.3
CRICTL_VERSION := 1.34.0
COREDNS_VERSION := 1.14.7
CLUSTER_ENV := K8S_VERSION=$(CLUSTER_KUBERNETES_VERSION) CRICTL_VERSION=$(CRICTL_VERSION) \
  COREDNS_VERSION=$(COREDNS_VERSION) DAPR_RUNTIME_VERSION=$(DAPR_RUNTIME_VERSION) \
  DAPR_EXCLUDE_COMPONENTS="$(DAPR_EXCLUDE_COMPONENTS)" HELM=$(HELM) TWINFLEET_CACHE=$(TWINFLEET_CACHE)
VENV := .venv
PY := $(VENV)/bin/python
FLEET ?= 1000
export TWINFLEET_DAPRD := $(DAPRD)
export TWINFLEET_DEVICE_DAPRD := $(DEVICE_DAPRD)
export TWINFLEET_LOADGEN := $(LOADGEN)
export TWINFLEET_AZURITE := $(AZURITE)
export TWINFLEET_FLOORGO := $(FLOORGO)
export TWINFLEET_HELM := $(HELM)
export TWINFLEET_KUBECONFORM := $(KUBECONFORM)
export TWINFLEET_HYDRA := $(HYDRA)
export TWINFLEET_OTELCOL := $(OTELCOL)
export TWINFLEET_KUBERNETES_VERSION := $(KUBERNETES_VERSION)
export TWINFLEET_DAPR_SCHEMAS := $(TWINFLEET_CACHE)/schemas/dapr-$(DAPR_RUNTIME_VERSION)
export TWINFLEET_PROMETHEUS_SCHEMAS := $(TWINFLEET_CACHE)/schemas/prometheus-operator-$(PROMETHEUS_OPERATOR_VERSION)
export TWINFLEET_CACHE
export TWINFLEET_CLUSTER_KUBERNETES_VERSION := $(CLUSTER_KUBERNETES_VERSION)
export TWINFLEET_CRICTL_VERSION := $(CRICTL_VERSION)
export TWINFLEET_COREDNS_VERSION := $(COREDNS_VERSION)
export TWINFLEET_DAPR_RUNTIME_VERSION := $(DAPR_RUNTIME_VERSION)

.PHONY: help ## list the targets
help:
	@grep -E '^\.PHONY: [a-z-]+ ## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-z-]+) ## (.*)/  make \1\t\2/' | expand -t 24

.PHONY: setup ## install Redis, Mosquitto, Azurite, the Python env, build daprd (cloud and device) and the broker plugin (idempotent)
setup: system $(VENV)/.installed $(DAPRD) $(DEVICE_DAPRD) $(AZURITE) broker-plugin

.PHONY: system
system:
	@scripts/setup-system.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $@

$(AZURITE):
	@AZURITE_VERSION=$(AZURITE_VERSION) TWINFLEET_CACHE=$(TWINFLEET_CACHE) scripts/install-azurite.sh

.PHONY: broker-plugin
broker-plugin: system
	@TWINFLEET_CACHE=$(TWINFLEET_CACHE) scripts/build-broker-plugin.sh >/dev/null

$(DAPRD):
	@DAPR_RUNTIME_VERSION=$(DAPR_RUNTIME_VERSION) DAPR_EXCLUDE_COMPONENTS="$(DAPR_EXCLUDE_COMPONENTS)" \
	  TWINFLEET_CACHE=$(TWINFLEET_CACHE) scripts/build-daprd.sh

$(DEVICE_DAPRD):
	@DAPR_RUNTIME_VERSION=$(DAPR_RUNTIME_VERSION) DAPR_KEEP_COMPONENTS="$(DEVICE_DAPR_COMPONENTS)" \
	  DAPR_BINARY_NAME=daprd-device-$(DAPR_RUNTIME_VERSION) TWINFLEET_CACHE=$(TWINFLEET_CACHE) scripts/build-daprd.sh

.PHONY: tools ## build helm + kubeconform, prepare Kubernetes, Dapr and ServiceMonitor schemas for offline validation
tools: $(VENV)/.installed
	@HELM_VERSION=$(HELM_VERSION) KUBECONFORM_VERSION=$(KUBECONFORM_VERSION) KUBERNETES_VERSION=$(KUBERNETES_VERSION) \
	  DAPR_RUNTIME_VERSION=$(DAPR_RUNTIME_VERSION) PROMETHEUS_OPERATOR_VERSION=$(PROMETHEUS_OPERATOR_VERSION) \
	  PYTHON=$(PY) TWINFLEET_CACHE=$(TWINFLEET_CACHE) \
	  scripts/build-tools.sh >/dev/null

.PHONY: run ## run the whole suite + a simulated fleet in the foreground (Ctrl-C stops it)
run: setup
	@$(PY) -m services.devtools run --fleet $(FLEET)

.PHONY: up ## start the suite + fleet in the background
up: setup
	@$(PY) -m services.devtools up --fleet $(FLEET)

.PHONY: down ## stop what `make up` started
down:
	@$(PY) -m services.devtools down

$(HYDRA):
	@HYDRA_VERSION=$(HYDRA_VERSION) TWINFLEET_CACHE=$(TWINFLEET_CACHE) nice -n 10 scripts/build-hydra.sh >/dev/null

$(OTELCOL): tools/otelcol/builder.yaml
	@OTELCOL_VERSION=$(OTELCOL_VERSION) TWINFLEET_CACHE=$(TWINFLEET_CACHE) nice -n 10 scripts/build-otelcol.sh >/dev/null

.PHONY: tracing ## build the local tracing backend (an OpenTelemetry Collector, OTLP in, spans to a file)
tracing: $(OTELCOL)

.PHONY: test ## run the whole test suite (unit, integration with real daprd/Redis/Mosquitto/Hydra, browser, slow, containers, cluster)
test: setup tools $(HYDRA) $(OTELCOL) images cluster-build
	@$(PY) -m pytest -q

.PHONY: test-fast ## unit + integration tests without the slow fault tests, the containers and the cluster
test-fast: setup tools $(HYDRA) $(OTELCOL)
	@$(PY) -m pytest -q -m "not slow and not containers and not cluster"

.PHONY: engine ## a Docker engine: reuse one that answers, else install docker.io and start dockerd
engine:
	@scripts/docker-engine.sh start

.PHONY: engine-stop ## stop the Docker engine `make engine` started (never another one)
engine-stop:
	@scripts/docker-engine.sh stop

.PHONY: images ## build every container image (each reused while its inputs are unchanged)
images: $(VENV)/.installed $(DAPRD) $(DEVICE_DAPRD) engine
	@nice -n 10 $(PY) -m services.devtools images build --daprd $(DAPRD) --device-daprd $(DEVICE_DAPRD)

.PHONY: images-verify ## rebuild every image from nothing and check it comes out with the same ID
images-verify: images
	@nice -n 10 $(PY) -m services.devtools images verify --daprd $(DAPRD) --device-daprd $(DEVICE_DAPRD)

.PHONY: images-lock ## re-resolve the Python image's locked dependencies (after pyproject changed)
images-lock: $(VENV)/.installed
	@$(PY) -m services.devtools images lock

.PHONY: up-containers ## start the suite in containers in the background (from `make images`)
up-containers: images
	@$(PY) -m services.devtools containers up

.PHONY: down-containers ## remove what `make up-containers` started
down-containers: $(VENV)/.installed
	@$(PY) -m services.devtools containers down

.PHONY: lint ## ruff + mypy
lint: setup
	@$(VENV)/bin/ruff check services twinfleet tests examples bench
	@$(VENV)/bin/ruff format --check services twinfleet tests examples bench
	@$(VENV)/bin/mypy

.PHONY: bench ## end-to-end figures next to the raw floor measured in the same run
bench: setup $(LOADGEN) $(FLOORGO)
	@$(PY) -m bench $(BENCH_ARGS)

$(LOADGEN): bench/loadgen/main.go bench/loadgen/go.mod
	@cd bench/loadgen && go build -o $(LOADGEN) .

$(FLOORGO): bench/floorgo/main.go bench/floorgo/go.mod
	@cd bench/floorgo && go build -o $(FLOORGO) .

.PHONY: grafana ## write the suite's Grafana dashboard and copy Dapr's own from its Go module into deploy/grafana
grafana: setup
	@$(PY) -m services.devtools.grafana $(DAPR_RUNTIME_VERSION)

.PHONY: components ## render the Dapr components for k3s and aks into deploy/
components: setup
	@$(PY) -m services.devtools components

.PHONY: cluster-system
cluster-system:
	@scripts/cluster/setup-system.sh

.PHONY: cluster-build ## build what the local cluster needs (Kubernetes, crictl, CoreDNS, Dapr control plane, their images; reused)
cluster-build: cluster-system $(DAPRD)
	@$(CLUSTER_ENV) nice -n 10 scripts/cluster/build-kubernetes.sh
	@$(CLUSTER_ENV) nice -n 10 scripts/cluster/build-extras.sh >/dev/null
	@$(CLUSTER_ENV) nice -n 10 scripts/cluster/build-dapr-control-plane.sh >/dev/null

.PHONY: cluster ## a single-node Kubernetes cluster as local processes with Dapr (mTLS) installed; prints the kubeconfig
cluster: cluster-build tools
	@$(CLUSTER_ENV) scripts/cluster/cluster.sh up
	@$(CLUSTER_ENV) scripts/cluster/dapr.sh install
	@$(CLUSTER_ENV) scripts/cluster/cluster.sh env

.PHONY: cluster-status ## what the local cluster runs and the memory it takes
cluster-status:
	@$(CLUSTER_ENV) scripts/cluster/cluster.sh status

.PHONY: cluster-down ## stop the local cluster and undo every host change it made (its run directory goes too)
cluster-down:
	@$(CLUSTER_ENV) scripts/cluster/cluster.sh down --purge
