# The two commands a newcomer needs: `make run` (the service, embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# boaviztapi (embodied impact) lives in its own venv: its pins fight ours (requirements-boavizta.txt).
BOAVIZTA_VENV ?= .venv-boavizta
# So does llm-compressor (the llm_quantize step): it pins older transformers (requirements-llm.txt).
LLM_VENV ?= .venv-llm
# So does Flower (the federated step): it pins older fastapi, starlette, protobuf (requirements-federated.txt).
FEDERATED_VENV ?= .venv-federated

.PHONY: run test test-container install install-dev install-container-engine migrate benchmark screenshots openapi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(BOAVIZTA_VENV)/.installed: requirements-boavizta.txt
	test -x $(BOAVIZTA_VENV)/bin/python || $(PYTHON) -m venv $(BOAVIZTA_VENV)
	$(BOAVIZTA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BOAVIZTA_VENV)/bin/python -m pip install --quiet -r requirements-boavizta.txt
	touch $@

$(LLM_VENV)/.installed: requirements-llm.txt
	test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LLM_VENV)/bin/python -m pip install --quiet -r requirements-llm.txt
	touch $@

$(FEDERATED_VENV)/.installed: requirements-federated.txt
	test -x $(FEDERATED_VENV)/bin/python || $(PYTHON) -m venv $(FEDERATED_VENV)
	$(FEDERATED_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FEDERATED_VENV)/bin/python -m pip install --quiet -r requirements-federated.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(BOAVIZTA_VENV)/.installed $(LLM_VENV)/.installed $(FEDERATED_VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed $(BOAVIZTA_VENV)/.installed $(LLM_VENV)/.installed $(FEDERATED_VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed $(BOAVIZTA_VENV)/.installed $(LLM_VENV)/.installed $(FEDERATED_VENV)/.installed
	$(VENV)/bin/compresso serve

# The engine's tests use no service, and the others mostly wait on servers, workers and outages: on CI's two
# cores the two halves run side by side (about 25 minutes one after the other on a 2-core AVX2 EPYC); the
# engine's output is printed after the rest's. The container stack (tests/container) runs last, alone: beside
# the others its image build slowed the fault tests past their bounds. About a minute with podman's layer
# cache (the code's layer alone rebuilds), about nine from nothing, and skipped where no podman is installed.
# With PYTEST_ARGS, one pytest runs just those.
test: $(VENV)/.installed-dev
ifeq ($(strip $(PYTEST_ARGS)),)
	@engine_log=$$(mktemp); \
	$(PY) -m pytest -p no:cacheprovider tests/engine > $$engine_log 2>&1 & engine=$$!; \
	$(PY) -m pytest --ignore=tests/engine --ignore=tests/container; rest=$$?; \
	wait $$engine; engine_status=$$?; \
	echo "===== tests/engine (run beside the rest) ====="; cat $$engine_log; rm -f $$engine_log; \
	echo "===== tests/container (after both) ====="; \
	$(PY) -m pytest -p no:cacheprovider tests/container; container=$$?; \
	test $$rest -eq 0 && test $$engine_status -eq 0 && test $$container -eq 0
else
	$(PY) -m pytest $(PYTEST_ARGS)
endif

# tests/container alone: builds the Dockerfile and runs docker-compose.yml end to end with podman (about nine
# minutes from nothing, under one with podman's layer cache). Skipped, with the reason, where no engine starts.
test-container: $(VENV)/.installed-dev
	$(PY) -m pytest -p no:cacheprovider tests/container

# What tests/container needs on Debian: podman (runc, for hosts whose cgroups crun refuses; catatonit, the
# init that compose's `init: true` asks for) and debootstrap, which builds the base image where no
# registry answers.
install-container-engine:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends podman runc catatonit debootstrap

migrate: $(VENV)/.installed
	$(VENV)/bin/compresso migrate

benchmark: $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	HF_HUB_OFFLINE=1 $(PY) benchmarks/quantize_minilm.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/api_quantize_minilm.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/engine_bench.py

# Refreshes docs/screenshots/*.png from the browser flow test (plain test runs write them elsewhere).
screenshots: $(VENV)/.installed-dev
	COMPRESSO_TEST_SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest tests/browser -k test_upload_build_submit_watch_and_download

# Rewrites docs/openapi.json from the code; tests/core/test_openapi_document.py fails until it matches.
openapi: $(VENV)/.installed
	$(VENV)/bin/compresso openapi > docs/openapi.json
