"""Settings: the one place DermaSynth reads its environment.

Every process builds one :class:`Settings` through :func:`get_settings`. Variables use the
``DERMASYNTH_`` prefix (``DERMASYNTH_REDIS_URL``, ``DERMASYNTH_S3_ENDPOINT`` ...); a ``.env`` file in
the working directory is read too. In ``production`` the values that are only safe on a laptop are
refused (issue 12): secrets that are empty, placeholders or shorter than 32 random bytes (the API-key
pepper, the S3 secret, the Redis password), the object store's root user, and a Redis URL without a
password (``redis://:PASSWORD@redis:6379/0``).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_S3_SECRET = "minioadmin"
DEFAULT_KEY_PEPPER = "dermasynth-development-pepper"
MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128  # estimated from the secret's own character frequencies
PLACEHOLDER_WORDS = (
    "change",
    "minioadmin",
    "example",
    "placeholder",
    "password",
    "passw0rd",
    "secret",
    "replace",
    "default",
    "dermasynth",
    "insecure",
    "xxxx",
    "todo",
    "pepper",
)
_ZLIB_OVERHEAD = 11
ROOT_USERS = frozenset({"minioadmin", "root", "admin", "administrator"})


def secret_problem(value: str) -> str | None:
    """Why ``value`` is not a production secret (empty, a placeholder, shorter than 32 random bytes), or None.

    Randomness is estimated from the value's character frequencies (Shannon entropy times length) and how
    far it compresses (a repeated pattern has little of either): a 32-byte
    secret from ``openssl rand -hex 32`` or ``python -c 'import secrets; print(secrets.token_urlsafe(32))'``
    passes; ``aaaa...`` or a word repeated does not.
    """
    if not value.strip():
        return "is empty"
    lowered = value.lower()
    word = next((w for w in PLACEHOLDER_WORDS if w in lowered), None)
    if word is not None:
        return f"looks like a placeholder (it contains {word!r})"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is {len(value.encode())} bytes long; at least {MIN_SECRET_BYTES} random bytes are needed"
    counts = Counter(value)
    shannon = -sum(n * math.log2(n / len(value)) for n in counts.values())
    compressed = 8 * max(0, len(zlib.compress(value.encode(), 9)) - _ZLIB_OVERHEAD)  # catches repeated patterns
    bits = min(shannon, compressed)
    if bits < MIN_SECRET_BITS:
        return f"is not random enough (about {bits:.0f} bits; at least {MIN_SECRET_BITS} are needed)"
    return None


def redis_password(url: str) -> str | None:
    """The password in a ``redis://[user]:password@host:port/db`` URL, or None."""
    password = urlsplit(url).password
    return None if password is None else unquote(password)


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

    # -- issue 12 (security): presigned URLs ---------------------------------------------------------
    # Each service has its own object-store user (DERMASYNTH_S3_ACCESS_KEY / DERMASYNTH_S3_SECRET_KEY);
    # production refuses the store's root user. URLs are signed with the service's own credentials.
    artefact_url_ttl_s: int = Field(
        default=300,
        ge=10,
        le=900,
        description="lifetime of presigned artefact download URLs (short: they outlive a key's revocation)",
    )

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

    # Web app (issue 16): the frontend reaches the gateway at ``gateway_url``; people sign in with their own key,
    # or through Streamlit's OIDC login (an [auth] section in .streamlit/secrets.toml) with this service key.
    frontend_service_key: SecretStr | None = Field(
        default=None,
        description="the web app's own key (scopes clinician, engineer and delegate), used only behind an identity "
        "provider's sign-in (the gateway records whom it acts for in the audit trail); never shown in a page",
    )
    frontend_prediction_chunk: int = Field(
        default=32,
        gt=0,
        le=1024,
        description="images per prediction request the web app sends (at most the gateway's max_prediction_images)",
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

    # -- issue 12 (security): request budgets, rate limits, quotas, audit, internal endpoints ---------
    max_json_body_bytes: int = Field(
        default=256 * 1024, gt=0, description="largest body of a JSON request (jobs, register, deploy ...)"
    )
    max_prediction_body_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="largest body of POST /v1/predictions (all its images)"
    )
    max_prediction_image_pixels: int = Field(
        default=25_000_000, gt=0, description="largest width*height of one image sent for prediction"
    )
    max_prediction_request_pixels: int = Field(
        default=200_000_000, gt=0, description="pixel budget of one prediction request (all its images)"
    )
    max_explained_images: int = Field(default=4, ge=0, le=64, description="most images explained in one request")
    rate_limit_per_minute: int = Field(default=600, ge=0, description="requests per API key per minute; 0: off")
    max_active_jobs_per_owner: int = Field(default=20, ge=1, description="queued or running jobs per owner")
    max_stored_bytes_per_owner: int = Field(
        default=200 * 1024**3, gt=0, description="bytes of datasets an owner may keep in the store"
    )
    audit_retention_days: int = Field(default=365, ge=1, le=3650, description="how long audit entries are kept")
    docs_enabled: bool = Field(default=True, description="serve /docs, /redoc and /openapi.json")
    gateway_internal_port: int = Field(
        default=9809, ge=0, le=65535, description="port of the gateway's /metrics (not exposed); 0: off"
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
    def _refuse_weak_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if self.store == "s3" and (self.s3_access_key.strip().lower() in ROOT_USERS or not self.s3_access_key.strip()):
            problems.append(
                f"DERMASYNTH_S3_ACCESS_KEY {self.s3_access_key!r} is the object store's root user or empty; "
                "give each service its own least-privilege user"
            )
        if redis_password(self.redis_url) is None:
            problems.append("DERMASYNTH_REDIS_URL has no password; use redis://:PASSWORD@host:6379/0 (or an ACL user)")
        for name, value in self._deployed_secrets():
            problem = secret_problem(value)
            if problem is not None:
                problems.append(f"{name} {problem}")
        if problems:
            raise ValueError(
                "production refuses insecure settings (make secrets with openssl rand -hex 32): " + "; ".join(problems)
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
