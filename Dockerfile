# One image for the API and the workers. The default torch wheel from PyPI carries CUDA, so the same
# image serves the gpu worker; build with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# for a much smaller CPU-only image.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    COMPRESSO_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/compresso
# boaviztapi (the embodied impact of the workers' hardware) pins older fastapi and pandas than ours:
# it gets its own venv, which the workers run as a separate interpreter (COMPRESSO_BOAVIZTA_PYTHON).
COPY requirements-boavizta.txt ./
RUN python -m venv /opt/boavizta && /opt/boavizta/bin/pip install -r requirements-boavizta.txt
ENV COMPRESSO_BOAVIZTA_PYTHON=/opt/boavizta/bin/python
# llm-compressor (llm_quantize) pins older transformers and compressed-tensors: its own venv too.
COPY requirements-llm.txt ./
RUN python -m venv /opt/llm && /opt/llm/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/llm/bin/pip install -r requirements-llm.txt
ENV COMPRESSO_LLM_PYTHON=/opt/llm/bin/python
# Flower (the federated step) pins older fastapi, starlette and protobuf: its own venv too.
COPY requirements-federated.txt ./
RUN python -m venv /opt/federated && /opt/federated/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/federated/bin/pip install -r requirements-federated.txt
ENV COMPRESSO_FEDERATED_PYTHON=/opt/federated/bin/python
# torch first, in its own layer: it is by far the largest dependency and changes least often.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
# app.cli imports the client commands of the SDK package (compresso.cli).
COPY compresso ./compresso
COPY migrations ./migrations
RUN pip install -e .

RUN useradd --create-home --uid 1000 compresso && mkdir -p /data && chown compresso:compresso /data
USER compresso
VOLUME ["/data"]
EXPOSE 8000

CMD ["compresso", "api", "--host", "0.0.0.0", "--port", "8000"]
