# syntax=docker/dockerfile:1
# mumu on the CPU: one image for every stage and the gateway (the command picks the role).
#
#   docker build -t mumu .
#   docker run -e MUMU_NATS__URL=nats://nats:4222 mumu stage transcribe
#
# llama-cpp-python is compiled from source here; GGML_NATIVE=OFF keeps the binary portable
# (a native build on a CPU with AMX crashed in ggml_backend_amx_mul_mat on first use).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/mumu
ENV PATH=/opt/mumu/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY sql ./sql
COPY schemas ./schemas
COPY src ./src
RUN pip install --upgrade pip==24.3.1 setuptools==75.6.0 wheel==0.45.1 \
    && pip install .

FROM ${PYTHON_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mumu \
    && useradd --system --uid 10001 --gid mumu --home-dir /home/mumu --create-home mumu \
    && mkdir -p /data /models \
    && chown mumu:mumu /data /models
COPY --from=build /opt/mumu /opt/mumu
ENV PATH=/opt/mumu/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MUMU_DATA_DIR=/data \
    MUMU_GATEWAY__HOST=0.0.0.0 \
    MUMU_GATEWAY__PORT=8080 \
    MUMU_STAGE__HTTP_HOST=0.0.0.0 \
    MUMU_STAGE__HTTP_PORT=8081 \
    MUMU_HEALTH_URL=http://127.0.0.1:8080/api/health
VOLUME ["/models"]
USER 10001:10001
WORKDIR /home/mumu
# 8080: the gateway; 8081: a stage's probes and metrics; 9464: `mumu exporter`
EXPOSE 8080 8081 9464
# the default command is the gateway (:8080/api/health); a stage container sets
# MUMU_HEALTH_URL=http://127.0.0.1:8081/ready (as docker-compose.yml does)
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MUMU_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["mumu"]
CMD ["gateway"]
