# The Streamlit frontend. It talks only to the gateway (DERMASYNTH_GATEWAY_URL) through the typed gateway
# client, so its image installs the `frontend` extra (client + streamlit) and no torch.
# Multi-stage; runs as uid 10001.
# Build from the repository root:  docker build -f deploy/docker/frontend.Dockerfile -t dermasynth/frontend:0.1.0 .
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md LICENSE /src/
COPY shared /src/shared
COPY services /src/services
RUN pip install "/src[frontend]"

FROM python:3.11.13-slim-bookworm
RUN useradd --create-home --uid 10001 --user-group dermasynth
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
COPY services/frontend /app/frontend
USER 10001:10001
# started from its own folder, so that services/frontend/.streamlit/config.toml applies (toolbar in viewer mode)
WORKDIR /app/frontend
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=2)"
CMD ["python", "-m", "streamlit", "run", "/app/frontend/app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--browser.gatherUsageStats=false"]
