"""The worker's Prometheus metrics: alerts counted by kind, the input lag read from the broker
and Redis (the suite's embedded stack), and a scrape that survives a failing read."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.kafka.clients import kafka_client_options
from streams.messages.outputs import Output
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client
from streams.state.progress import Barrier
from streams.worker.metrics import WorkerMetrics, alert_kind
from tests.conftest import run_sync


def samples(body: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name`` in a scrape body: sorted labels → value."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_alert_kind_reads_the_kind_or_says_unknown() -> None:
    assert alert_kind(b'{"kind":"crowding_tax","model":"m1"}') == "crowding_tax"
    assert alert_kind(b'{"model":"m1"}') == "unknown"
    assert alert_kind(b'{"kind":7}') == "unknown"
    assert alert_kind(b"[1, 2]") == "unknown"
    assert alert_kind(b"not json") == "unknown"


def test_alerts_are_counted_by_kind_and_other_outputs_are_not() -> None:
    metrics = WorkerMetrics()
    metrics.outputs_sent(
        [
            Output("alerts", b"a", b'{"kind":"crowding_tax"}', 1),
            Output("alerts", b"b", b'{"kind":"crowding_tax"}', 2),
            Output("alerts", b"c", b'{"kind":"concentration"}', 3),
            Output("scores", b"m1", b'{"kind":"crowding_tax"}', 4),
        ]
    )
    body = run_sync(metrics.render(None, 1))
    assert samples(body, "mmc_alerts_total") == {(("kind", "concentration"),): 1.0, (("kind", "crowding_tax"),): 2.0}
    assert samples(body, "mmc_output_messages_total")[(("topic", "alerts"),)] == 3.0


async def _produce(settings: Settings, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(settings.topic(topic), value=b"{}", key=str(i).encode())
    finally:
        await producer.stop()


def test_input_lag_is_the_records_in_the_log_not_applied_yet(settings: Settings) -> None:
    """Five rounds records produced, the first three marked applied: lag 5, then 2; a topic
    with nothing in it has lag 0."""
    run_sync(_produce(settings, "rounds", 5))

    async def scrape(applied: int) -> bytes:
        state = RedisState(redis_client(settings), settings.state_namespace)
        barrier = Barrier(settings, state)
        try:
            if applied:
                await state.mark_processed("rounds", [(0, offset, 1_000 + offset) for offset in range(applied)])
            return await WorkerMetrics().render(state, settings.partitions, barrier)
        finally:
            await barrier.stop()
            await state.r.aclose()

    lag = samples(run_sync(scrape(0)), "mmc_input_lag_records")
    assert lag == {(("topic", "rounds"),): 5.0, (("topic", "submissions"),): 0.0, (("topic", "stakes"),): 0.0, (("topic", "targets"),): 0.0}
    assert samples(run_sync(scrape(3)), "mmc_input_lag_records")[(("topic", "rounds"),)] == 2.0


class _BrokerDown:
    async def lag(self, topic: str) -> int:
        raise ConnectionError("broker unreachable")


def test_a_failing_lag_read_is_counted_and_the_scrape_still_answers() -> None:
    metrics = WorkerMetrics()
    run_sync(metrics.refresh_lag(_BrokerDown()))  # type: ignore[arg-type]
    body = run_sync(metrics.render(None, 1))
    assert samples(body, "mmc_state_scrape_errors_total") == {(): 1.0}
    assert samples(body, "mmc_input_lag_records") == {}
