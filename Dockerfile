# The performance-engine worker. Built by docker-compose.yml; settings come from PERF_ENGINE_*.
FROM python:3.11-slim

# PERF_ENGINE_WEB_HOST: a published port reaches the container's own address, not its
# loopback, so the worker listens on all of the container's interfaces; who can reach the
# port is decided where it is published (docker-compose.yml: the host's loopback only).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PERF_ENGINE_DATA_DIR=/tmp/performance-engine \
    PERF_ENGINE_WEB_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY performance_engine ./performance_engine
# The backfill's compiled loops are compiled once here and cached in the image.
RUN pip install '.[worker]' && python -m performance_engine.metrics.kernels \
    && python -m performance_engine.store.kernels \
    && useradd --create-home --uid 10001 engine

USER engine
EXPOSE 6066
CMD ["perf-engine", "worker"]
