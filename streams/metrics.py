"""Prometheus metrics (prometheus-client) both the workers and ``mmc web`` serve: the state's gauges.

Every process builds its own :class:`~prometheus_client.CollectorRegistry` (no module-level
default registry: tests run several workers' worth of metrics in one process). Each process's
own counters: :mod:`streams.worker.metrics` (the workers), :mod:`streams.web.metrics` (``mmc web``).

Both — the state in Redis, read at scrape time (the same value from every process: aggregate
with ``max``; a worker reports them once it has handled its first record):

- ``mmc_rounds_known``, ``mmc_rounds_open`` (opened, not closed yet);
- ``mmc_redis_round_memory_bytes{round}`` — ``MEMORY USAGE`` summed over the round's keys
  (universe, submissions, live sums, basis, targets, scores, crowding), names from
  :class:`streams.state.Keys`; only for rounds whose rows retention keeps, so the series are
  bounded by ``MMC_RETENTION_ROUNDS`` plus the rounds not final (a pruned round's series goes);
- ``mmc_redis_used_memory_bytes``, ``mmc_redis_maxmemory_bytes`` — Redis ``INFO memory``
  (``used_memory``, ``maxmemory``; 0 = no limit): alert well before the first reaches the second,
  since Redis then refuses writes (``noeviction``) and the workers retry until memory is freed;
  on a Redis Cluster, those of the primary nearest its limit;
- ``mmc_state_scrape_errors_total`` — scrapes whose Redis read failed (the counters above are
  still served).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from redis.asyncio.cluster import RedisCluster

if TYPE_CHECKING:
    from streams.state import RedisState

log = logging.getLogger(__name__)

#: The ``Content-Type`` of a scrape (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST
# The state store's fields of a round's hash set when the round closes and when retention
# deletes its rows (see streams.state.keys).
_CLOSE_FIELD = "close_ts"
_ROWS_PRUNED_FIELD = "rows_pruned"


class StateGauges:
    """Gauges of the Redis state, refreshed from Redis at every scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds_known = Gauge("mmc_rounds_known", "Rounds ever opened.", registry=registry)
        self.rounds_open = Gauge("mmc_rounds_open", "Rounds opened and not closed yet.", registry=registry)
        self.round_memory = Gauge(
            "mmc_redis_round_memory_bytes",
            "Redis MEMORY USAGE summed over the round's keys.",
            ["round"],
            registry=registry,
        )
        self.scrape_errors = Counter(
            "mmc_state_scrape_errors",
            "Scrapes whose read of the Redis state failed.",
            registry=registry,
        )
        self.used_memory = Gauge("mmc_redis_used_memory_bytes", "Redis INFO memory used_memory.", registry=registry)
        self.maxmemory = Gauge(
            "mmc_redis_maxmemory_bytes",
            "Redis INFO memory maxmemory (0: no limit); writes are refused beyond it.",
            registry=registry,
        )

    async def refresh(self, state: RedisState, partitions: int) -> None:
        """Read the rounds and their memory from Redis (three pipelined round trips)."""
        try:
            rounds = await state.known_rounds()
            keys = state.keys
            pipe = state.r.pipeline(transaction=False)
            for r in rounds:
                pipe.hmget(keys.round(r), [_CLOSE_FIELD, _ROWS_PRUNED_FIELD])
            flags = await pipe.execute() if rounds else []
            # Memory series only for rounds whose rows are kept: bounded by retention.
            kept = [r for r, (_, pruned) in zip(rounds, flags, strict=True) if pruned is None]
            pipe = state.r.pipeline(transaction=False)
            per_round = []
            for r in kept:
                names = [
                    keys.round(r),
                    keys.ids(r),
                    keys.subs(r),
                    keys.basis(r),
                    keys.targets(r),
                    keys.scores(r),
                    keys.crowding(r),
                ]
                names += [keys.live(r, p) for p in range(partitions)]
                for name in names:
                    pipe.memory_usage(name)
                per_round.append(len(names))
            results = await pipe.execute() if kept else []
        except Exception as exc:  # a scrape never fails because Redis did: the counters still count
            log.warning("metrics: cannot read the state from Redis: %r", exc)
            self.scrape_errors.inc()
            return
        self.rounds_known.set(len(rounds))
        self.rounds_open.set(sum(1 for closed, _ in flags if closed is None))
        self.round_memory.clear()
        i = 0
        for r, n in zip(kept, per_round, strict=True):
            self.round_memory.labels(str(r)).set(sum(int(x) for x in results[i : i + n] if x is not None))
            i += n
        try:
            if isinstance(state.r, RedisCluster):
                per_node = await state.r.info("memory", target_nodes=RedisCluster.PRIMARIES)
                info = _nearest_its_limit(list(per_node.values()))
            else:
                info = await state.r.info("memory")
        except Exception as exc:  # INFO may be refused (ACLs of a managed Redis): the rest still counts
            log.debug("metrics: no Redis INFO memory: %r", exc)
            return
        self.used_memory.set(float(info.get("used_memory", 0)))
        self.maxmemory.set(float(info.get("maxmemory", 0)))


def _nearest_its_limit(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a Redis Cluster's primaries' ``INFO memory``, the one nearest its ``maxmemory`` (the
    one using most memory when none has a limit): the first to refuse writes."""
    return max(
        nodes,
        key=lambda info: (
            float(info.get("used_memory", 0)) / float(info["maxmemory"]) if float(info.get("maxmemory", 0)) else 0.0,
            float(info.get("used_memory", 0)),
        ),
    )
