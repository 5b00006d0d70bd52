# A CPU job worker (Celery) with CPU-only torch; by default it serves the light `default` queue.
# Installs the `train` extra only. Multi-stage; runs as uid 10001.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t dermasynth/worker:0.1.0 .
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md LICENSE /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install "/src[train]"

FROM python:3.11.13-slim-bookworm
# the cache folder exists and belongs to the user, so that a fresh volume mounted there is writable
RUN useradd --create-home --uid 10001 --user-group dermasynth \
 && install -d -o 10001 -g 10001 /home/dermasynth/cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DERMASYNTH_CACHE_ROOT=/home/dermasynth/cache \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/dermasynth
EXPOSE 9808
# One process per container (--pool=solo); on SIGTERM the worker hands its job back (graceful shutdown).
CMD ["celery", "-A", "services.worker.celery_app", "worker", "--pool=solo", "-Q", "default", \
     "--without-gossip", "--without-mingle", "-l", "INFO"]
