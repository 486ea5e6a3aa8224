"""The worker's Faust app, built and nothing else: its broker, credentials and settings, and the input topics as its agents read them.

Faust keeps nothing of the service's on disk (the state is in Redis) and declares no topic
(:func:`streams.kafka.topics.create_topics` creates them). The agents, the submissions task and
the pages are wired to the app in :mod:`streams.worker.main`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import faust

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import partitions_for
from streams.settings import Settings


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",") if server.strip())


def faust_credentials(settings: Settings) -> Any:
    """Faust's credentials object for the configured SASL/TLS, or None for PLAINTEXT."""
    options = kafka_client_options(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=options.get("ssl_context"),
    )


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured as the worker's (group = ``MMC_APP_ID``), without agents yet."""
    # Faust keeps nothing of ours on disk (state is in Redis); keep its data dir out of the cwd.
    datadir = os.path.join(tempfile.gettempdir(), "mmc-stream-faust", settings.app_id)
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=datadir,
        # Topics are created by streams.kafka.topics.create_topics (partitions, compaction); Faust must
        # not declare them, nor its leader topic.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_max_poll_records=50,
        stream_buffer_maxsize=256,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.worker_web_port,
        web_host=settings.web_host,
        producer_max_request_size=8 << 20,
        consumer_max_fetch_size=16 << 20,
    )
    return app


def input_topic(app: faust.App, settings: Settings, name: str) -> Any:
    """Input topic ``name`` (short name) as the agents read it: raw key and value bytes."""
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions_for(settings, name),
    )
