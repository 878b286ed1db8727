# One image for the API and the workers: Debian's Python in /opt/compresso, with the three isolated venvs
# (Boavizta, llm-compressor, Flower) beside it. It runs as the unprivileged user `compresso`.
#
# The default build is CPU-only: torch comes from PyTorch's CPU index, so no CUDA library is installed.
#   docker build -t compresso:latest .
# The gpu worker's image starts from NVIDIA's CUDA runtime image and takes PyPI's CUDA build of torch
# (docker-compose.yml builds it for worker-gpu as compresso:gpu):
#   docker build -t compresso:gpu --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
# tests/container/test_compose_stack.py builds it (with a local Debian base where no registry answers) and
# runs the compose stack end to end.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    COMPRESSO_DATA_DIR=/data \
    PATH=/opt/compresso/bin:$PATH

# Debian and Ubuntu (the CUDA images) mark their Python as externally managed, so everything goes into
# venvs; curl is the API's healthcheck.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: it is by far the largest dependency and changes least often.
RUN /usr/bin/python3 -m venv /opt/compresso \
    && /opt/compresso/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /srv/compresso
# boaviztapi (the embodied impact of the workers' hardware) pins older fastapi and pandas than ours:
# it gets its own venv, which the workers run as a separate interpreter (COMPRESSO_BOAVIZTA_PYTHON).
COPY requirements-boavizta.txt ./
RUN /usr/bin/python3 -m venv /opt/boavizta && /opt/boavizta/bin/pip install -r requirements-boavizta.txt
ENV COMPRESSO_BOAVIZTA_PYTHON=/opt/boavizta/bin/python
# llm-compressor (llm_quantize) pins older transformers and compressed-tensors: its own venv too.
COPY requirements-llm.txt ./
RUN /usr/bin/python3 -m venv /opt/llm && /opt/llm/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/llm/bin/pip install -r requirements-llm.txt
ENV COMPRESSO_LLM_PYTHON=/opt/llm/bin/python
# Flower (the federated step) pins older fastapi, starlette and protobuf: its own venv too.
COPY requirements-federated.txt ./
RUN /usr/bin/python3 -m venv /opt/federated && /opt/federated/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/federated/bin/pip install -r requirements-federated.txt
ENV COMPRESSO_FEDERATED_PYTHON=/opt/federated/bin/python

# The service's dependencies, read from pyproject.toml, in a layer of their own: a change to the code alone
# then rebuilds in seconds instead of reinstalling them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
# app.cli imports the client commands of the SDK package (compresso.cli).
COPY compresso ./compresso
COPY migrations ./migrations
RUN pip install --no-deps -e .

# uid 10001: Ubuntu's images (the CUDA base) already give 1000 to the user `ubuntu`.
RUN useradd --create-home --uid 10001 compresso && mkdir -p /data && chown compresso:compresso /data
USER compresso
VOLUME ["/data"]
EXPOSE 8000

CMD ["compresso", "api", "--host", "0.0.0.0", "--port", "8000"]
