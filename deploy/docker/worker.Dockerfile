# A CPU job worker (Celery); by default it serves the light `default` queue.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t dermasynth-worker .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install /src

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 dermasynth
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DERMASYNTH_CACHE_ROOT=/home/dermasynth/cache
USER dermasynth
WORKDIR /home/dermasynth
EXPOSE 9808
# One process per container; jobs resume from checkpoints, so a stopped container loses at most one epoch.
CMD ["celery", "-A", "services.worker.celery_app", "worker", "--pool=solo", "-Q", "default", \
     "--without-gossip", "--without-mingle", "-l", "INFO"]
