# The Streamlit frontend. It talks only to the gateway (DERMASYNTH_GATEWAY_URL); CPU torch comes along only
# because the dermasynth package it shares its schemas with depends on it.
# Build from the repository root:  docker build -f deploy/docker/frontend.Dockerfile -t dermasynth-frontend .
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
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY services/frontend /app/frontend
USER dermasynth
WORKDIR /home/dermasynth
EXPOSE 8501
CMD ["python", "-m", "streamlit", "run", "/app/frontend/app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--browser.gatherUsageStats=false"]
