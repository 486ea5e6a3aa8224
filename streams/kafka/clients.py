"""Kafka clients from the settings: the one place that turns them into connection options.

- :func:`kafka_client_options` - aiokafka keyword arguments (bootstrap, SASL, TLS) for every
  admin client, producer and consumer the service or its tools create;
- :func:`librdkafka_config` - the same for the one librdkafka client, the submissions consumer.

Never enable aiokafka's idempotent or transactional producer: Tansu, the embedded broker,
rejects ``InitProducerId`` (DESIGN §5), so the service is at-least-once with idempotent effects.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from streams.errors import ConfigurationError
from streams.settings import Settings


class KafkaClientOptions(dict[str, Any]):
    """aiokafka keyword arguments whose ``repr`` hides the SASL password.

    It is a plain ``dict`` otherwise: ``AIOKafkaProducer(**options)`` works.
    """

    _SECRET_KEYS = frozenset({"sasl_plain_password", "sasl.password"})

    def __repr__(self) -> str:
        shown = {k: ("**********" if k in self._SECRET_KEYS and v else v) for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    __str__ = __repr__


def kafka_client_options(settings: Settings) -> KafkaClientOptions:
    """aiokafka keyword arguments for the configured cluster: bootstrap servers, SASL and TLS.

    Works for ``AIOKafkaAdminClient``, ``AIOKafkaProducer`` and ``AIOKafkaConsumer``. The
    password is read from its ``SecretStr`` only here and is masked in the result's ``repr``.

    Raises:
        ConfigurationError: SASL without username/password, or TLS files with a protocol
            that does not use TLS.
    """
    protocol = settings.kafka_security_protocol
    options = KafkaClientOptions(
        bootstrap_servers=settings.kafka_bootstrap,
        security_protocol=protocol,
    )
    ssl_files = {
        "cafile": settings.kafka_ssl_cafile,
        "certfile": settings.kafka_ssl_certfile,
        "keyfile": settings.kafka_ssl_keyfile,
    }
    if protocol in ("SSL", "SASL_SSL"):
        try:
            options["ssl_context"] = create_ssl_context(**ssl_files)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot build the Kafka TLS context from MMC_KAFKA_SSL_* files: {exc}") from exc
    elif any(ssl_files.values()):
        raise ConfigurationError(f"MMC_KAFKA_SSL_* files are set but MMC_KAFKA_SECURITY_PROTOCOL={protocol}; use SSL or SASL_SSL, or unset the files")
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        if not settings.kafka_sasl_username or password is None:
            raise ConfigurationError(f"MMC_KAFKA_SECURITY_PROTOCOL={protocol} needs MMC_KAFKA_SASL_USERNAME and MMC_KAFKA_SASL_PASSWORD")
        # aiokafka takes the SCRAM credentials in the sasl_plain_* arguments too.
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


def librdkafka_config(settings: Settings) -> KafkaClientOptions:
    """librdkafka configuration (``confluent_kafka``) for the configured cluster: bootstrap, SASL, TLS.

    The same settings and the same checks as :func:`kafka_client_options`, in librdkafka's
    property names; TLS takes the CA, certificate and key files as paths. The password is
    masked in the result's ``repr``.

    Raises:
        ConfigurationError: as :func:`kafka_client_options`.
    """
    options = kafka_client_options(settings)  # the same checks, made in one place
    protocol = settings.kafka_security_protocol
    config = KafkaClientOptions({"bootstrap.servers": settings.kafka_bootstrap, "security.protocol": protocol.lower()})
    if protocol in ("SSL", "SASL_SSL"):
        for key, path in (
            ("ssl.ca.location", settings.kafka_ssl_cafile),
            ("ssl.certificate.location", settings.kafka_ssl_certfile),
            ("ssl.key.location", settings.kafka_ssl_keyfile),
        ):
            if path:
                config[key] = path
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = options["sasl_plain_username"]
        config["sasl.password"] = options["sasl_plain_password"]
    return config
