"""The one reader of the environment: every ``MMC_*`` setting, validated once.

Build it with :func:`load_settings` (or ``Settings()``) at process start and pass it down;
nothing else in the service reads ``os.environ``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Connection, topic, scoring and alert settings (environment prefix ``MMC_``).

    Two web servers, two ports, so that a worker and ``mmc web`` run side by side on one machine:

    - ``MMC_WORKER_WEB_PORT`` (default 6066): each worker's own server (Faust's), with ``/``
      and ``/health`` for health checks and ``/metrics``; off with ``MMC_WEB_ENABLED=false``.
      Several workers on one machine need one port each.
    - ``MMC_WEB_PORT`` (default 8080): ``mmc web``, the live page, ``/api/...`` and its own
      ``/metrics`` (``mmc web --port`` overrides it; 0 picks a free port).

    Both bind ``MMC_WEB_HOST``. ``MMC_WEB_PORT`` is read by ``mmc web`` only: a worker's port is
    ``MMC_WORKER_WEB_PORT`` alone.
    """

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
    redis_cluster: bool = Field(
        False,
        description="MMC_REDIS_URL names one node of a Redis Cluster: use the cluster client (slots discovered from that node).",
    )
    state_namespace: str = Field("mmc", pattern=r"^[A-Za-z0-9_\-\.]{1,32}$", description="Prefix of every Redis key (one namespace per deployment or test).")
    round_cache_rounds: int = Field(4, ge=0, description="Rounds whose prepared rows a worker keeps in memory between target updates.")

    # --- Ingestion -------------------------------------------------------------------------
    ingest_batch_size: int = Field(
        256,
        ge=1,
        description=(
            "Submissions/stakes an agent takes at once: one barrier check and one Redis round trip serve the batch "
            "(throughput vs. memory: ~130 KB per 6,720-id submission)."
        ),
    )
    ingest_batch_seconds: float = Field(0.05, gt=0, description="Longest an agent waits to fill a batch (added latency when the stream is sparse).")
    ingest_fetch_backoff_ms: int = Field(
        10,
        ge=0,
        description=(
            "How long the submissions consumer (librdkafka's fetch.queue.backoff.ms) stops fetching a partition once its "
            "prefetch queue is full; librdkafka's own default, 1,000, left the worker idle for most of each second."
        ),
    )

    # --- Input limits ----------------------------------------------------------------------
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Inputs larger than this go to the dead-letter topic (oversize).")
    max_ids: int = Field(100_000, ge=1, description="Largest universe a round may open with.")
    deadletter_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description=(
            "Largest value a dead letter carries: a refused input larger than this is dead-lettered as its first "
            "bytes, with its original size and SHA-256 in headers (so a dead letter always fits the broker's limit)."
        ),
    )
    max_clock_skew_seconds: float = Field(
        3600.0,
        gt=0,
        description=(
            "An input stamped further than this ahead of the worker's clock is refused clock_skew before it touches "
            "the state (one future-stamped record would otherwise move the rounds watermark for good). Kafka 4's "
            "brokers refuse such records at append by default with the same bound (log.message.timestamp.after.max.ms)."
        ),
    )

    # --- Scoring ---------------------------------------------------------------------------
    seed_salt: str = Field("mmc-stream", description="Salt of the per-round bootstrap seed (MMC 2020 draws).")
    mmc_draws: int = Field(20, ge=1)
    mmc_fraction: float = Field(0.67, gt=0, le=1)
    max_missing_ratio: float = Field(0.2, ge=0, lt=1, description="Updates with more missing targets are not scored.")
    leaderboard_window: int = Field(20, ge=1, description="Rounds in the rolling leaderboard window.")
    history_rounds: int = Field(
        60,
        ge=1,
        description=(
            "A model's latest scored rounds that leaderboard rows and alerts look at (at least the leaderboard window "
            "and the CWMM baseline + 1, and more than the rounds resolving at once); Redis keeps no more than this."
        ),
    )
    payout_corr_multiplier: float = 0.5
    payout_mmc_multiplier: float = 2.0
    payout_clip: float = Field(0.05, gt=0)

    # --- Retention -------------------------------------------------------------------------
    retention_rounds: int = Field(
        30,
        ge=1,
        description=(
            "A round's rows, live sums, basis and targets (its bulk: ~2.2–2.4 bytes per prediction in Redis) are deleted "
            "from Redis once its final targets update is scored AND this many later rounds have closed (closes counted "
            "up to the latest round a targets update was scored for, so a replay prunes at the same update); a round "
            "without a final update keeps them. ~20 rounds resolve at once, so 30 leaves ~10 rounds after a round's "
            "final update for a repeated one and for `mmc whatif`; a targets update for a deleted round is refused "
            "no_submissions."
        ),
    )
    retention_score_rounds: int = Field(
        100,
        ge=1,
        description=(
            "The same rule for a round's stored scores and crowding figures (what the web API serves per round; "
            "~0.45 KB per model): kept for this many later closes (at least retention_rounds). The crowding trend, "
            "the leaderboard and each model's latest history_rounds of history are kept whatever this says."
        ),
    )

    # --- Who crowds a model ---------------------------------------------------------------
    neighbours_k: int = Field(
        10,
        ge=1,
        le=100,
        description=(
            "Nearest stakers listed per model at each round's close (the neighbours topic), and the stakers whose stake a "
            "final round's crowding tax sets to 0 (scoring.crowd_neighbours, scoring.crowd_tax)."
        ),
    )
    neighbours_max_stakers: int = Field(
        1000,
        ge=1,
        description=(
            "Stakers each model is compared with at a round's close: when more have stake, the ones holding the most "
            "(the product's cost grows with it: about 2 s at 10,000 models × 1,000 stakers × 6,720 ids on 2 cores). Each "
            "neighbours message says the share of the stake they hold (compared_share)."
        ),
    )
    crowd_threshold: float = Field(
        0.8,
        ge=-1,
        le=1,
        description="Correlation with a model from which another staker counts in its crowd (the neighbours topic's crowd_share).",
    )

    # --- Alerts ----------------------------------------------------------------------------
    # On the article's scale: its stake-weighted CWMM rose ~0.14 over ~600 rounds (~0.0002 per
    # round) and its top-to-bottom stake-decile spread is ~0.17, so fixed raw thresholds either
    # fire on noise or never; the rules below measure against each series' own noise.
    alert_cwmm_spike_sigmas: float = Field(
        3.0,
        gt=0,
        description=(
            "corr_w_mm above the model's own baseline mean by this many of its own standard deviations "
            "(over alert_cwmm_baseline_rounds rounds) → corr_w_mm_spike (1.1% of noise-only model-rounds, tests/streams/worker/test_alerts.py)."
        ),
    )
    alert_cwmm_spike_delta: float = Field(
        0.05,
        ge=0,
        description="…and by at least this much (a model whose CWMM barely moves does not alert on a tiny jump).",
    )
    alert_cwmm_baseline_rounds: int = Field(10, ge=2, description="A model's latest rounds with a CWMM that make its baseline.")
    alert_cwmm_penalised_decile: int = Field(
        7,
        ge=2,
        le=10,
        description=(
            "A model entering this corr_w_mm decile of its round or a higher one (1 = lowest) from below it (its "
            "baseline placed among the previous round's deciles), rising by at least alert_cwmm_spike_delta → "
            "corr_w_mm_spike (trigger penalised_deciles; 1.0% of model-rounds on noise, tests/streams/worker/test_alerts.py). "
            "7: the article finds MMC flat over deciles 1–5 and falling from 7 to 10."
        ),
    )
    alert_stake_jump_ratio: float = Field(5.0, gt=1, description="Stake rising by this factor between rounds → crowding_tax.")
    alert_trend_rounds: int = Field(
        20,
        ge=3,
        description="Rounds in the window of the crowding_trend test (the article's rise takes hundreds; fewer than 20 is noise).",
    )
    alert_trend_min_t: float = Field(
        3.0,
        description=(
            "t-statistic of the least-squares slope (of the stake-weighted CWMM, or of its gap over the median CWMM) "
            "at or above which the trend counts as rising: one-sided p ≈ 0.004 per statistic at 20 rounds."
        ),
    )
    alert_trend_min_slope: float = Field(0.0, description="…and a per-round slope above this.")
    alert_min_effective_models: float = Field(10.0, gt=0, description="Effective number of models (1/HHI) below this → concentration.")

    # --- Start-up --------------------------------------------------------------------------
    startup_timeout_seconds: float = Field(
        60.0,
        ge=0,
        description=(
            "How long `mmc worker`, `topics`, `rebuild` and `web` wait at start for Kafka and Redis to answer (retrying "
            "with exponential backoff, one log line per attempt) before exiting with status 3 and one line naming the "
            "service, address and cause; 0 tries once."
        ),
    )
    startup_retry_max_seconds: float = Field(10.0, gt=0, description="Longest pause between two start-up attempts (the backoff doubles from 0.5 s up to this).")
    fail_grace_seconds: float = Field(
        20.0,
        gt=0,
        description="Longest the clean shutdown of a worker stopping on a bug may take before it exits anyway (status 70).",
    )

    # --- Web -------------------------------------------------------------------------------
    web_enabled: bool = Field(True, description="Run the worker's own web server (Faust's: / and /health for health checks, /metrics) on MMC_WORKER_WEB_PORT.")
    web_host: str = Field("127.0.0.1", description="Bind address of both web servers, the worker's and `mmc web`'s (0.0.0.0 in containers).")
    worker_web_port: int = Field(6066, ge=1, le=65535, description="Port of the worker's own web server (MMC_WEB_ENABLED); one per worker on a machine.")
    web_port: int = Field(
        8080, ge=0, le=65535, description="Port of `mmc web` (the live page, /api/..., /metrics); `mmc web --port` overrides it, 0 picks a free one."
    )
    web_live_max_clients: int = Field(
        500,
        ge=1,
        description=(
            "Open /api/stream connections one `mmc web` serves; one more is answered 503 (too_many_live_clients) "
            "with Retry-After. Each costs a file descriptor, tens of KB in the process (its handler and at most one "
            "32 KiB piece of the stream) and at most twice MMC_WEB_LIVE_SOCKET_BUFFER_BYTES in the kernel: 500 stays "
            "below the common 1,024-descriptor limit with room for Redis, Kafka and API requests, and within "
            "~150 MB at worst. More readers: more replicas."
        ),
    )
    web_live_client_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description=(
            "How far (bytes of events not yet written) a live client may fall behind the output topics before it is "
            "dropped (its browser reconnects and reloads). Above the burst of one scored update of a few thousand "
            "models (~1 KB of scores and leaderboard per model), so a client that reads keeps up. Waiting events are "
            "shared by all clients (one copy each), so this bounds the server's memory once, not once per client."
        ),
    )
    web_live_socket_buffer_bytes: int = Field(
        128 * 1024,
        ge=0,
        description=(
            "Kernel send buffer (SO_SNDBUF) of each live stream's socket; 0 leaves it to the kernel, whose autotuning "
            "let a client that stops reading hold over 1 MB of kernel memory. 128 KiB (the kernel doubles it) still "
            "carries a few MB/s at 100 ms round trip."
        ),
    )
    web_live_write_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description=(
            "Longest a live client's socket may take to accept what was written to it; a client that stops reading "
            "is dropped after this, so no unread data stays in the server's buffers longer. A browser that reads "
            "takes milliseconds."
        ),
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """A URL redis-py can open: ``redis://``, ``rediss://`` or ``unix://``, a port in 1–65535."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"the Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
        port = parts.port  # raises ValueError when out of range or not a number
        if port == 0:
            raise ValueError(f"the Redis URL's port must be 1–65535, got {url!r}")
        return url

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
        submissions (read by :mod:`streams.worker.ingest`'s own consumer), ``app_id`` (Faust's) for the rest."""
        return f"{self.app_id}-submissions" if topic == "submissions" else self.app_id

    def topic(self, name: str) -> str:
        """The full topic name for a short name such as ``scores``."""
        return f"{self.topic_prefix}{name}"


def load_settings() -> Settings:
    """Read the environment once."""
    return Settings()
