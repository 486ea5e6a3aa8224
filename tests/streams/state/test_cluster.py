"""Redis Cluster: every multi-key step of the store stays in one slot, and the store on a real
three-primary cluster leaves the same state as on one Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis.asyncio.cluster
import redis.cluster
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from streams.errors import ConfigurationError
from streams.metrics import StateGauges
from streams.settings import Settings
from streams.state import Keys, RedisState, StakeEntry, SubmissionRow
from streams.state.client import redis_client, redis_sync_client
from streams.state.retention import RetentionPolicy
from tests.e2e.test_faults import snapshot

PARTITIONS = 4
#: Model names that put braces where a hash tag would end or start early.
BRACED = ("plain", "a}b", "{x}", "}", "{", "m:{r1}", "a{b}c")

models = st.text(min_size=1, max_size=40)
rounds = st.integers(min_value=0, max_value=10**9)
namespaces = st.from_regex(r"[A-Za-z0-9_\-\.]{1,32}", fullmatch=True)
topics = st.sampled_from(["rounds", "submissions", "stakes", "targets"])


def one_slot(keys: list[str]) -> bool:
    return len({key_slot(k.encode()) for k in keys}) == 1


def round_groups(k: Keys, r: int) -> dict[str, list[str]]:
    """The keys each script call and transaction of the store passes together for round ``r``
    (``store``, ``results`` and ``retention``: the call site named on the left)."""
    lives = [k.live(r, p) for p in range(PARTITIONS)]
    return {
        "put_submissions: transaction + drop_if_pruned": [k.round(r), k.subs(r), *lives],
        "open_round: transaction": [k.ids(r), k.round(r)],
        "put_basis: transaction + drop_if_pruned": [k.round(r), k.basis(r)],
        "put_targets: put_targets": [k.round(r), k.targets(r)],
        "get_live_total: MGET": lives,
        "put_round_scores: transaction + drop_if_pruned": [k.round(r), k.scores(r), k.crowding(r)],
        "put_close_cwmm: transaction + drop_if_pruned": [k.round(r), k.close_cwmm(r)],
        "enforce: prune rows": [k.round(r), k.subs(r), k.basis(r), k.targets(r), k.ids(r), *lives],
        "enforce: prune scores": [k.round(r), k.scores(r), k.crowding(r), k.close_cwmm(r)],
    }


@given(namespace=namespaces, r=rounds)
def test_every_multi_key_step_of_a_round_stays_in_its_slot(namespace: str, r: int) -> None:
    """Each transaction, script and MGET over a round's keys passes keys of one hash slot."""
    for site, keys in round_groups(Keys(namespace), r).items():
        assert one_slot(keys), site


@given(namespace=namespaces, topic=topics)
def test_progress_watermark_and_epoch_share_a_slot(namespace: str, topic: str) -> None:
    """The ``advance`` script's keys (progress, watermark, epoch) hash to one slot."""
    k = Keys(namespace)
    assert one_slot([k.progress(topic), k.watermark(), k.epoch(), k.recovery_lock()])


@given(namespace=namespaces, model=st.one_of(models, st.sampled_from(BRACED)))
def test_a_models_keys_share_a_slot_whatever_braces_its_name_holds(namespace: str, model: str) -> None:
    """Every key of one model hashes to one slot, braces in its name included.

    Keys does not escape the name: a key is ``ns:{m:`` + name + ``}:…`` and Redis hashes the
    text between the first ``{`` and the first ``}`` after it. That ``{`` is always the one
    before ``m:`` (the namespace holds no braces), and the first ``}`` after it depends on the
    name alone, so every key of one model gets the same tag (possibly shared with other models
    whose names start the same up to a ``}``: still one slot per model, which is all the store needs).
    """
    k = Keys(namespace)
    assert one_slot([k.stakes(model), k.history(model), k.neighbours(model), k.crowd_tax(model)])


def test_the_namespace_pattern_admits_no_braces() -> None:
    """A namespace cannot carry a brace, which would move every key's hash tag."""
    with pytest.raises(ValueError):
        Settings(state_namespace="a{b}")


def test_the_cluster_flag_builds_cluster_clients_with_password_and_ca() -> None:
    """``MMC_REDIS_CLUSTER`` builds redis-py's asyncio cluster client (no connection yet), password
    and CA applied as for one node; a database other than 0 is refused."""
    settings = Settings(redis_url="rediss://node-0:6380/0", redis_cluster=True, redis_password="pw", redis_ssl_ca_certs="/ca.pem")  # type: ignore[arg-type]
    client = redis_client(settings)
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    assert client.connection_kwargs["password"] == "pw"
    assert client.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    with pytest.raises(ConfigurationError, match="database 2"):
        redis_client(Settings(redis_url="redis://node-0:6379/2", redis_cluster=True))


async def exercise(state: RedisState) -> dict[str, Any]:
    """Every kind of write and read of the store (transactions, scripts in pipelines across
    rounds, scans, compaction, wipe), for models with braces in their names; returns what it read."""
    ids = tuple(f"id{i}" for i in range(5))
    await state.claim_epoch()
    for r, ts in ((811, 1_000), (812, 2_000), (813, 3_000)):
        await state.open_round(r, ids, ts, r)
    for i, model in enumerate(BRACED):
        await state.add_stake(model, StakeEntry(500 + i, i, None, 1.0 + i))
        await state.add_stake(model, StakeEntry(600 + i, 100 + i, None, 2.0 + i))
    rows = {(r, m): SubmissionRow(r * 10 + i, i, i % PARTITIONS, 1.0, bytes([i]) * 8) for r in (811, 812, 813) for i, m in enumerate(BRACED)}
    lives = {(r, p): np.arange(len(ids) + 1, dtype=np.float64) * (r + p) for r in (811, 812, 813) for p in range(PARTITIONS)}
    await state.put_submissions(rows, lives)
    await state.add_models(BRACED)
    context = await state.submission_context([(812, m, 10_000) for m in BRACED], [(812, p, len(ids)) for p in range(PARTITIONS)])
    await state.close_round(811, 1_500, 900)
    await state.close_round(812, 2_500, 901)
    await state.put_round_scores(811, {m: f'{{"m":"{m}"}}'.encode() for m in BRACED}, b"{}")
    await state.put_close_cwmm(811, dict.fromkeys(BRACED, 0.25))
    await state.put_history(811, {m: {"round": 811} for m in BRACED})
    await state.put_neighbours(811, "fp", {m: b"[]" for m in BRACED})
    await state.mark_processed("submissions", [(p, 10 + p, 1_000 + p) for p in range(PARTITIONS)])
    report = await state.prune_rounds(rows=1, scores=1, history=1, partitions=PARTITIONS)
    await state.put_targets(811, 1, True, np.zeros(len(ids)))
    await state.put_targets(812, 1, True, np.ones(len(ids)))
    await state.put_history(812, {m: {"round": 812} for m in BRACED})
    families = await state.memory_by_family()
    registry = CollectorRegistry()
    await StateGauges(registry).refresh(state, PARTITIONS)
    return {
        "rows": [None if row is None else row.encode() for row in context[0]],
        "stakes": context[1],
        "sums": [s.tolist() for s in context[2]],
        "live_total": (await state.get_live_total(813, len(ids), PARTITIONS)).tolist(),
        "report": report,
        "policy": await state.retention_policy() == RetentionPolicy(1, 1, 1, PARTITIONS),
        "histories": await state.get_histories(BRACED),
        "families": sorted((name, n) for name, (n, _) in families.items()),
        "progress": await state.progress("submissions"),
        "empty": await state.is_empty(),
        "gauges": {name: registry.get_sample_value(name) for name in ("mmc_rounds_known", "mmc_rounds_open", "mmc_state_scrape_errors_total")},
        "round_memory": sorted(m.labels["round"] for f in registry.collect() if f.name == "mmc_redis_round_memory_bytes" for m in f.samples),
        "used_memory": (registry.get_sample_value("mmc_redis_used_memory_bytes") or 0) > 0,
    }


def run_store(settings: Settings) -> tuple[dict[str, Any], dict[bytes, Any], int, bool]:
    """What :func:`exercise` read, the state it left, how many keys ``wipe`` removed and
    whether the namespace was empty after it."""

    async def go() -> tuple[dict[str, Any], int, bool]:
        state = RedisState(redis_client(settings), settings.state_namespace)
        try:
            read = await exercise(state)
            client = redis_sync_client(settings)
            try:
                read["snapshot"] = snapshot(client, settings)  # type: ignore[arg-type]
            finally:
                client.close()
            removed = await state.wipe()
            return read, removed, await state.is_empty()
        finally:
            await state.close()

    read, removed, empty = asyncio.run(go())
    return read, read.pop("snapshot"), removed, empty


def test_the_store_on_a_cluster_leaves_what_it_leaves_on_one_server(make_settings: Callable[..., Settings], redis_cluster_url: str) -> None:
    """The same writes and reads on single-node Redis and on a three-primary cluster read the
    same values, leave the same keys with the same contents, and wipe the same number of keys."""
    single_settings = make_settings(create=False)  # one namespace on both: the snapshots name the keys
    single = run_store(single_settings)
    cluster = run_store(make_settings(create=False, redis_url=redis_cluster_url, redis_cluster=True, state_namespace=single_settings.state_namespace))
    assert cluster[0] == single[0]
    assert cluster[1] == single[1]
    pruned = single[1][Keys(single_settings.state_namespace).round(811).encode()]
    assert b"rows_pruned" in pruned and b"scores_pruned" in pruned  # retention's scripts ran in a pipeline
    assert single[0]["report"].stakes_removed > 0  # compaction scanned every primary
    assert cluster[2] == single[2] > 0
    assert cluster[3] and single[3]
    assert cluster[0]["used_memory"] and cluster[0]["round_memory"] == ["812", "813"]


def test_the_cluster_spreads_the_state_over_every_primary(make_settings: Callable[..., Settings], redis_cluster_url: str) -> None:
    """Rounds and models land on different primaries, so the test above exercises cross-node pipelines and scans."""
    settings = make_settings(create=False, redis_url=redis_cluster_url, redis_cluster=True)
    client = redis_sync_client(settings)
    assert isinstance(client, redis.cluster.RedisCluster)
    try:
        k = Keys(settings.state_namespace)
        nodes = {client.get_node_from_key(key).name for key in [k.round(r) for r in range(811, 830)] + [k.stakes(m) for m in BRACED]}
        assert len(nodes) == len(client.get_primaries()) == 3
    finally:
        client.close()
