# syntax=docker/dockerfile:1
# The lco-finetune image: API, scheduler, worker and CLI in one (docker-compose.yml picks the
# command per service). CPU by default; a CUDA image by build arguments:
#
#   docker build -t lco-finetune:latest .                                  # CPU
#   docker build -t lco-finetune:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#     --build-arg EXTRAS=vllm .                                            # CUDA + vLLM
#
# torch comes from TORCH_INDEX first (the CPU index gives 2.13.0+cpu, which satisfies the
# project's torch==2.13.0 pin without the multi-GB CUDA wheels), then the project and its
# pinned dependencies from PyPI. The image runs as the unprivileged user `lco` (uid 10001);
# its data dir /data (LCO_DATA_DIR) is owned by that user, so a named volume mounted there
# starts writable. Not built on the machines this project is developed on (they have no
# Docker engine); tests/test_service_compose.py lints this file with hadolint and checks
# that every path it copies exists.

ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A CUDA base has no Python of its own; the python base has it already. Debian/Ubuntu
# package versions are not pinned: they change with every point release of the base.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY cli ./cli
COPY jobs ./jobs
COPY lco_core ./lco_core
COPY lco_spec ./lco_spec
COPY migrations ./migrations
COPY worker ./worker
# The project itself: its dependencies are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/lco lco \
    && mkdir -p /data \
    && chown lco:lco /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LCO_DATA_DIR=/data \
    HOME=/home/lco
WORKDIR /home/lco
USER 10001:10001
EXPOSE 8000
# The API; docker-compose.yml runs `lco scheduler`, `lco worker ...` and `lco migrate` from
# the same image. Probes: GET /livez, GET /readyz.
CMD ["uvicorn", "--factory", "api.app:create_app_from_env", "--host", "0.0.0.0", "--port", "8000"]
