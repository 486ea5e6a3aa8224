"""The one reader of the environment: every ``MMC_*`` setting, validated once.

Build it with :func:`load_settings` (or ``Settings()``) at process start and pass it down;
nothing else in the service reads ``os.environ``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Connection, topic, scoring and alert settings (environment prefix ``MMC_``)."""

    model_config = SettingsConfigDict(env_prefix="MMC_", frozen=True, extra="forbid")

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    topic_prefix: str = Field("mmc.", description="Prefix of every topic name.")
    partitions: int = Field(4, ge=1, description="Partitions of the input and output topics when the service creates them.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics the service creates.")
    app_id: str = Field("mmc-stream", description="Faust app id = Kafka consumer group.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    # Short group timeouts: Faust's defaults make a group join take ~30 s on the embedded broker.
    broker_session_timeout: float = Field(10.0, gt=0)
    broker_heartbeat_interval: float = Field(1.0, gt=0)
    broker_rebalance_timeout: float = Field(10.0, gt=0)

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL; rediss:// for TLS.")
    redis_password: SecretStr | None = Field(None, description="Redis AUTH password (kept out of the URL and logs).")
    redis_ssl_ca_certs: str | None = None
    state_namespace: str = Field("mmc", pattern=r"^[A-Za-z0-9_\-\.]{1,32}$", description="Prefix of every Redis key (one namespace per deployment or test).")
    round_cache_rounds: int = Field(4, ge=0, description="Rounds whose prepared rows a worker keeps in memory between target updates.")

    # --- Ingestion -------------------------------------------------------------------------
    ingest_batch_size: int = Field(
        256, ge=1,
        description=(
            "Submissions/stakes an agent takes at once: one barrier check and one Redis round trip serve the batch "
            "(throughput vs. memory: ~130 KB per 6,720-id submission)."
        ),
    )
    ingest_batch_seconds: float = Field(0.05, gt=0, description="Longest an agent waits to fill a batch (added latency when the stream is sparse).")
    ingest_fetch_backoff_ms: int = Field(
        10, ge=0,
        description=(
            "How long the submissions consumer (librdkafka's fetch.queue.backoff.ms) stops fetching a partition once its "
            "prefetch queue is full; librdkafka's own default, 1,000, left the worker idle for most of each second."
        ),
    )

    # --- Input limits ----------------------------------------------------------------------
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Inputs larger than this go to the dead-letter topic (oversize).")
    max_ids: int = Field(100_000, ge=1, description="Largest universe a round may open with.")

    # --- Scoring ---------------------------------------------------------------------------
    seed_salt: str = Field("mmc-stream", description="Salt of the per-round bootstrap seed (MMC 2020 draws).")
    mmc_draws: int = Field(20, ge=1)
    mmc_fraction: float = Field(0.67, gt=0, le=1)
    max_missing_ratio: float = Field(0.2, ge=0, lt=1, description="Updates with more missing targets are not scored.")
    leaderboard_window: int = Field(20, ge=1, description="Rounds in the rolling leaderboard window.")
    history_rounds: int = Field(
        60, ge=1,
        description=(
            "A model's latest scored rounds that leaderboard rows and alerts look at (at least the leaderboard window "
            "and the CWMM baseline + 1, and more than the rounds resolving at once); older history stays in Redis."
        ),
    )
    payout_corr_multiplier: float = 0.5
    payout_mmc_multiplier: float = 2.0
    payout_clip: float = Field(0.05, gt=0)

    # --- Alerts ----------------------------------------------------------------------------
    alert_cwmm_spike_delta: float = Field(0.15, description="corr_w_mm above the model's rolling mean by this much → corr_w_mm_spike.")
    alert_cwmm_baseline_rounds: int = Field(5, ge=1)
    alert_stake_jump_ratio: float = Field(5.0, gt=1, description="Stake rising by this factor between rounds → crowding_tax.")
    alert_trend_rounds: int = Field(5, ge=2, description="Rounds over which a rising stake-weighted corr_w_mm → crowding_trend.")
    alert_trend_min_slope: float = Field(0.002, description="Per-round slope of stake-weighted corr_w_mm that counts as rising.")
    alert_min_effective_models: float = Field(10.0, gt=0, description="Effective number of models (1/HHI) below this → concentration.")

    # --- Web -------------------------------------------------------------------------------
    web_enabled: bool = Field(True, description="Serve the web page, HTTP API and metrics from the worker.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)

    def to_env(self) -> dict[str, str]:
        """These settings as ``MMC_*`` environment variables (for a worker subprocess); secrets included."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"MMC_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def consumer_group(self, topic: str) -> str:
        """The consumer group reading input topic ``topic``: ``{app_id}-submissions`` for the
        submissions (read by :mod:`streams.ingest`'s own consumer), ``app_id`` (Faust's) for the rest."""
        return f"{self.app_id}-submissions" if topic == "submissions" else self.app_id

    def topic(self, name: str) -> str:
        """The full topic name for a short name such as ``scores``."""
        return f"{self.topic_prefix}{name}"


def load_settings() -> Settings:
    """Read the environment once."""
    return Settings()
