# A GPU job worker (Celery, one GPU, one process): GAN training, synthesis, classifier training, experiments.
# Installs the `train` extra only, with torch's CUDA wheels. Multi-stage; runs as uid 10001.
# Build from the repository root:
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t dermasynth/worker-cuda:0.1.0 .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y software-properties-common && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

FROM base AS build
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The PyPI wheels of torch for Linux carry their CUDA runtime.
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md LICENSE /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install "/src[train]"

FROM base
# the cache folder exists and belongs to the user, so that a fresh volume mounted there is writable
RUN useradd --create-home --uid 10001 --user-group dermasynth \
 && install -d -o 10001 -g 10001 /home/dermasynth/cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DERMASYNTH_CACHE_ROOT=/home/dermasynth/cache \
    MPLCONFIGDIR=/tmp/matplotlib NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/dermasynth
EXPOSE 9808
# --pool=solo: the worker process itself runs the job, so CUDA is never touched in the parent of a fork.
CMD ["celery", "-A", "services.worker.celery_app", "worker", "--pool=solo", "-Q", "gan,train", \
     "--without-gossip", "--without-mingle", "-l", "INFO"]
