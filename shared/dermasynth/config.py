"""Settings: the one place DermaSynth reads its environment.

Every process builds one :class:`Settings` through :func:`get_settings`. Variables use the
``DERMASYNTH_`` prefix (``DERMASYNTH_REDIS_URL``, ``DERMASYNTH_S3_ENDPOINT`` ...); a ``.env`` file in
the working directory is read too. In ``production`` the defaults that are only safe on a laptop
(the S3 secret, the API-key pepper) are refused.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_S3_SECRET = "minioadmin"
DEFAULT_KEY_PEPPER = "dermasynth-development-pepper"


class Settings(BaseSettings):
    """Configuration shared by the library, the CLI and every service."""

    model_config = SettingsConfigDict(env_prefix="DERMASYNTH_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Object storage: a local folder by default, S3/MinIO in compose and Kubernetes.
    store: Literal["filesystem", "s3"] = "filesystem"
    store_root: Path = Path("var/store")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: SecretStr = SecretStr(DEFAULT_S3_SECRET)
    s3_bucket: str = "dermasynth"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_public_endpoint: str | None = Field(
        default=None,
        description="host:port users reach S3 at, for presigned "
        "URLs, when services use another (s3_endpoint minio:9000 in compose)",
    )
    s3_public_secure: bool | None = Field(default=None, description="HTTPS at the public endpoint; None: as s3_secure")

    # Broker and job state.
    redis_url: str = "redis://127.0.0.1:6379/0"
    job_key_prefix: str = Field(
        default="dermasynth",
        pattern=r"^[A-Za-z0-9_\-.]{1,64}$",
        description="prefix of every Redis key: job records, API keys, Celery queues",
    )
    job_visibility_timeout_s: int = Field(
        default=12 * 3600,
        gt=0,
        description="un-acked jobs are redelivered "
        "after this long; longer than the longest job step between checkpoints",
    )
    job_lease_s: int = Field(
        default=60,
        ge=3,
        description="a running job's lease; a worker renews it every "
        "third of it, and a redelivered job waits for a dead worker's lease to expire",
    )
    job_max_retries: int = Field(default=5, ge=0, le=50, description="retries after transient storage/network errors")
    job_log_lines: int = Field(default=2000, gt=0, description="log lines kept per job")
    cache_root: Path = Field(default=Path("var/cache"), description="datasets fetched from the store, per worker")
    # -- issue 13: decoded-image cache (dermasynth.data.decoded_cache) --
    decoded_cache_max_bytes: int = Field(
        default=64 * 1024**3,
        ge=0,
        description="disk budget of one decoded-image cache; a larger dataset trains from the per-image path",
    )
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535, description="worker /metrics port; 0 = off")

    # -- issue 11: jobs that survive faults (sweeper, poison jobs, graceful shutdown, idempotency) --
    job_max_worker_losses: int = Field(
        default=3,
        ge=1,
        le=100,
        description="a job whose worker died (lease expired) this many times fails as a poison job instead of "
        "being handed to another worker again",
    )
    job_sweep_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="how often every worker looks for running jobs whose lease expired and re-sends them; "
        "0: a third of job_lease_s",
    )
    job_retry_backoff_s: int = Field(
        default=5, ge=1, description="first retry delay after a transient error; doubles each retry (with jitter)"
    )
    job_retry_backoff_max_s: int = Field(default=300, ge=1, description="longest retry delay after a transient error")
    worker_shutdown_grace_s: int = Field(
        default=90,
        ge=5,
        description="on SIGTERM a worker stops its job at the next checkpoint (or step), hands it back to the "
        "queue and exits within this; Kubernetes terminationGracePeriodSeconds should be this + 30",
    )
    worker_liveness_file: Path = Field(
        default=Path("/tmp/dermasynth-worker.alive"),
        description="touched by every worker's sweeper thread; `python -m services.worker.health` checks its age",
    )
    idempotency_ttl_s: int = Field(
        default=24 * 3600, ge=60, description="how long an Idempotency-Key's first answer is kept and replayed"
    )

    # Inference.
    triton_url: str = "127.0.0.1:8000"
    gateway_url: str = "http://127.0.0.1:8080"
    api_key: SecretStr | None = Field(
        default=None, description="the key the CLI sends to the gateway (DERMASYNTH_API_KEY)"
    )
    triton_timeout_s: float = Field(default=30.0, gt=0, description="longest wait for one Triton call")
    serving_model: str = Field(
        default="classifier",
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$",
        description="the Triton model POST /v1/predictions uses unless a request names one",
    )
    prediction_retention_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="keep images sent for prediction (metadata stripped) this many days; 0: never kept",
    )
    deploy_settle_s: float = Field(
        default=3.0,
        ge=0,
        description="how long the old version keeps serving after a "
        "deploy moved the live pointer (longer than the gateways' refresh)",
    )

    # Issue 14: serving (ONNX on Triton, calibrated predictions).
    serving_instance_kind: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="Triton instance group kind of deployed models unless a deploy names one; the GPU overlay sets gpu",
    )

    # Security and limits.
    api_key_pepper: SecretStr = SecretStr(DEFAULT_KEY_PEPPER)
    max_image_pixels: int = Field(default=50_000_000, gt=0, description="decompression-bomb guard")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_upload_files: int = Field(default=50_000, gt=0)
    max_prediction_images: int = Field(default=32, gt=0, le=1024)
    max_upload_expanded_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="zip-bomb guard: total uncompressed bytes of an upload"
    )
    max_upload_ratio: int = Field(
        default=100, gt=1, description="zip-bomb guard: largest compression ratio of a member"
    )

    # --- issue 15: deployment (JSON logs, Triton's restricted model control, placeholder secrets) ---
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json (one object a line) for log collectors"
    )
    triton_admin_key: SecretStr | None = Field(
        default=None,
        description="sent as the header triton-admin-key on Triton's model-repository API, which Triton "
        "started with --http-restricted-api refuses without it (compose and Kubernetes)",
    )

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        insecure = []
        if self.s3_secret_key.get_secret_value() == DEFAULT_S3_SECRET and self.store == "s3":
            insecure.append("DERMASYNTH_S3_SECRET_KEY")
        if self.api_key_pepper.get_secret_value() == DEFAULT_KEY_PEPPER:
            insecure.append("DERMASYNTH_API_KEY_PEPPER")
        if insecure:
            raise ValueError("production refuses development defaults; set " + ", ".join(insecure) + " to real secrets")
        placeholders = [name for name, value in self._deployed_secrets() if is_placeholder_secret(value)]
        if placeholders:
            raise ValueError(
                "production refuses placeholder secrets (empty, shorter than 16 characters, or an example value "
                "such as change-me); set " + ", ".join(placeholders) + " to random values (openssl rand -hex 24)"
            )
        return self

    def _deployed_secrets(self) -> list[tuple[str, str]]:
        """The secrets a deployment sets (issue 15), by environment variable, with their values."""
        found = [("DERMASYNTH_API_KEY_PEPPER", self.api_key_pepper.get_secret_value())]
        if self.store == "s3":
            found.append(("DERMASYNTH_S3_SECRET_KEY", self.s3_secret_key.get_secret_value()))
        password = urlsplit(self.redis_url).password
        if password is not None:
            found.append(("the password in DERMASYNTH_REDIS_URL", unquote(password)))
        if self.triton_admin_key is not None:
            found.append(("DERMASYNTH_TRITON_ADMIN_KEY", self.triton_admin_key.get_secret_value()))
        return found


# issue 15: the values example files and tutorials use, refused as secrets in production
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "example", "minioadmin", "password")


def is_placeholder_secret(value: str) -> bool:
    """Whether ``value`` cannot be a real secret: empty, short, or an example file's placeholder."""
    lowered = value.strip().lower()
    return len(lowered) < 16 or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call ``get_settings.cache_clear()`` to re-read."""
    return Settings()
