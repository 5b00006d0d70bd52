# The HTTP gateway (FastAPI + uvicorn) with CPU-only torch (it preprocesses images and computes Grad-CAM).
# Installs the `gateway` extra only. Multi-stage: build tools stay in the first stage; runs as uid 10001.
# Build from the repository root:  docker build -f deploy/docker/gateway.Dockerfile -t dermasynth/gateway:0.1.0 .
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU wheels of torch first, so that installing the package does not pull the CUDA ones
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md LICENSE /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install "/src[gateway]"

FROM python:3.11.13-slim-bookworm
RUN useradd --create-home --uid 10001 --user-group dermasynth
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DERMASYNTH_CACHE_ROOT=/tmp/dermasynth-cache
USER 10001:10001
WORKDIR /home/dermasynth
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v1/health/live', timeout=2)"
# --timeout-graceful-shutdown: requests in flight finish within Kubernetes' 30 s grace (after the 5 s preStop)
CMD ["uvicorn", "services.gateway.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8080", \
     "--proxy-headers", "--no-server-header", "--timeout-graceful-shutdown", "20"]
