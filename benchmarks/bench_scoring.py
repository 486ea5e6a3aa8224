"""Scoring-core benchmark: prints figures measured side by side in one run (ratios, not timed tests).

1. ``score_round`` from raw predictions (CORR, contribution, CWMM, SWMM and the 20-draw 2020
   MMC) vs numerai-tools ``numerai_corr`` + ``stake_weight`` + ``correlation_contribution``
   (which compute less: no bootstrap MMC, no CWMM) at 1,000 models × 5,000 ids.
2. The stream's path at 10,000 models × 6,720 ids × 20 draws: preparing a submission,
   closing the round (once), resolving a daily update from prepared rows (all targets
   present), and an update with 5% missing targets (the basis is rebuilt on the subset).
3. Bytes per prepared prediction.
4. Ranking a batch of 256 submissions (the ingestion's rank step): ``sort_structure``'s
   integer-key sort vs numpy's stable argsort, tie-free and with rounded predictions.
5. Who crowds whom at 10,000 models × 6,720 ids with 2,000 stakers: the round's basis
   (``close_round``), every model's 10 nearest stakers and crowd share (``crowd_neighbours``, with the
   service's default ``MMC_NEIGHBOURS_MAX_STAKERS`` and with every staker)
   beside it, and the crowd tax (``crowd_tax``) for the stakers and for every model.

Usage: ``python benchmarks/bench_scoring.py [--quick] [--only SECTION ...]``  (numerai-tools and
pandas required for the first section).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tournament(n_models: int, n_ids: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crowd = rng.normal(size=n_ids)
    preds = 0.5 * crowd + rng.normal(size=(n_models, n_ids))
    stakes = rng.lognormal(3.0, 1.5, size=n_models)
    stakes[rng.random(n_models) < 0.3] = 0.0
    targets = np.clip(np.round((0.1 * crowd + rng.normal(size=n_ids)) * 1.2 + 2) / 4, 0, 1)
    return preds, stakes, targets


def bench_against_numerai_tools(n_models: int, n_ids: int, repeat: int) -> None:
    import pandas as pd
    from numerai_tools import scoring as nt

    import scoring

    preds, stakes, targets = tournament(n_models, n_ids, 1)
    frame = pd.DataFrame(preds.T, columns=[f"m{i}" for i in range(n_models)])
    target_s = pd.Series(targets, name="target")
    stake_s = pd.Series(stakes, index=frame.columns)

    def reference() -> None:
        nt.numerai_corr(frame, target_s)
        mm = nt.stake_weight(nt.gaussian(nt.tie_kept_rank(frame)), stake_s[stake_s > 0])
        nt.correlation_contribution(frame, mm, target_s)

    ours = timed(lambda: scoring.score_round(preds, stakes, targets, round=812), repeat)
    theirs = timed(reference, repeat)
    print(f"## score_round vs numerai-tools at {n_models:,} models × {n_ids:,} ids (median of {repeat})")
    print(f"  numerai-tools numerai_corr + stake_weight + correlation_contribution: {theirs:8.3f} s")
    print(f"  scoring.score_round (CORR, contribution, CWMM, SWMM, 20-draw MMC):    {ours:8.3f} s")
    print(f"  speed-up: {theirs / ours:.1f}×  (target ≥ 10×)")


def bench_prepared(n_models: int, n_ids: int, repeat: int) -> None:
    import scoring
    from scoring import PreparedRound, close_round, prepare_submission, resolve_round, round_samples, score_prepared

    preds, stakes, targets = tournament(n_models, n_ids, 2)
    first_row = preds[0].copy()
    one = timed(lambda: prepare_submission(first_row), 20)
    prepared = PreparedRound.from_predictions(preds)
    del preds
    samples = round_samples(stakes, 812)
    start = time.perf_counter()
    basis = close_round(prepared, stakes, samples)
    close_s = time.perf_counter() - start
    resolve_s = timed(lambda: resolve_round(prepared, basis, targets), repeat)
    # The same resolution on one thread, for the ratio (results are the same bits: fixed blocks).
    import scoring.prepared as rounds_module

    threads, rounds_module.GATHER_THREADS = rounds_module.GATHER_THREADS, 1
    try:
        one_thread_s = timed(lambda: resolve_round(prepared, basis, targets), repeat)
    finally:
        rounds_module.GATHER_THREADS = threads
    missing = targets.copy()
    missing[np.random.default_rng(3).choice(n_ids, n_ids // 20, replace=False)] = np.nan
    missing_s = timed(lambda: score_prepared(prepared, stakes, missing, samples), max(1, repeat // 2))
    blob = prepare_submission(np.random.default_rng(4).normal(size=n_ids)).to_bytes()
    print(f"\n## stream path at {n_models:,} models × {n_ids:,} ids × {samples.shape[0]} draws")
    print(f"  prepare one submission (at ingestion):          {one * 1e3:8.2f} ms")
    print(f"  close the round (once, stakes frozen):          {close_s:8.3f} s")
    print(f"  resolve a daily update from prepared rows:      {resolve_s * 1e3:8.1f} ms  (target ≤ 250 ms)")
    print(f"    same, gathers on one thread instead of {threads}:   {one_thread_s * 1e3:8.1f} ms  ({one_thread_s / resolve_s:.2f}× slower)")
    print(f"  update with 5% of targets missing (subset):     {missing_s:8.3f} s")
    print(f"  bytes per prepared prediction:                  {len(blob) / n_ids:8.3f}     (target ≤ 4)")
    del scoring


def bench_ranking(batch: int, n_ids: int, repeat: int) -> None:
    from scoring.ranking import sort_structure

    rng = np.random.default_rng(5)
    print(f"\n## ranking a batch of {batch} submissions × {n_ids:,} ids (median of {repeat}; same orders)")
    for label, x in (("tie-free", rng.normal(size=(batch, n_ids))), ("rounded to 3 decimals", rng.normal(size=(batch, n_ids)).round(3))):
        ours = timed(lambda x=x: sort_structure(x), repeat)
        stable = timed(lambda x=x: np.argsort(x, axis=1, kind="stable"), repeat)
        print(f"  {label:22s} sort_structure {ours / batch * 1e3:6.3f} ms/row, numpy stable argsort {stable / batch * 1e3:6.3f} ms/row ({stable / ours:.2f}×)")


def bench_crowd(n_models: int, n_ids: int, n_stakers: int) -> None:
    from scoring import PreparedRound, close_round, crowd_neighbours, crowd_tax, round_samples
    from scoring.neighbours import TILE_ROWS
    from streams.settings import Settings

    cap = Settings.model_fields["neighbours_max_stakers"].default

    preds, _, targets = tournament(n_models, n_ids, 6)
    rng = np.random.default_rng(7)
    stakes = np.zeros(n_models)
    stakers = np.sort(rng.choice(n_models, n_stakers, replace=False))
    stakes[stakers] = rng.lognormal(3.0, 1.5, size=n_stakers)
    prepared = PreparedRound.from_predictions(preds)
    del preds
    samples = round_samples(stakes, 812)
    load = os.getloadavg()[0]

    def wall_cpu(fn: Callable[[], object]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    basis = wall_cpu(lambda: close_round(prepared, stakes, samples))
    neighbours = crowd_neighbours(prepared, stakes)
    found = wall_cpu(lambda: crowd_neighbours(prepared, stakes))
    compared = crowd_neighbours(prepared, stakes, max_stakers=cap).compared_share
    capped = wall_cpu(lambda: crowd_neighbours(prepared, stakes, max_stakers=cap))
    bigger = wall_cpu(lambda: crowd_neighbours(prepared, stakes, block_rows=4 * TILE_ROWS))
    # The dense product alone: one tile of random rows against the stakers, times the tiles.
    tile = rng.normal(size=(min(TILE_ROWS, n_models), n_ids))
    others = rng.normal(size=(n_stakers, n_ids))
    product = wall_cpu(lambda: [tile @ others.T for _ in range(-(-n_models // tile.shape[0]))])
    taxed = wall_cpu(lambda: crowd_tax(prepared, targets, neighbours))
    everyone = wall_cpu(lambda: crowd_tax(prepared, targets, neighbours, models=np.arange(n_models)))
    gflop = 2.0 * n_models * n_stakers * n_ids / 1e9

    def line(label: str, figures: tuple[float, float], note: str = "") -> None:
        print(f"  {label:58s} {figures[0]:7.2f} s wall, {figures[1]:7.2f} s CPU{note}")

    print(f"\n## who crowds whom at {n_models:,} models × {n_ids:,} ids, {n_stakers:,} stakers (one run each)")
    print(f"  load average before the runs: {load:.1f} on {os.cpu_count()} cores (other work shares the machine)")
    line("the round's basis (close_round, for reference)", basis)
    line(
        f"10 nearest stakers + crowd shares, the {min(cap, n_stakers):,} largest stakers",
        capped,
        f"  ({capped[0] / basis[0]:.2f}× the basis; target ≤ 3 s; MMC_NEIGHBOURS_MAX_STAKERS={cap:,}, {compared:.1%} of the stake)",
    )
    line(f"  same, all {n_stakers:,} stakers (crowd_neighbours without max_stakers)", found, f"  ({found[0] / basis[0]:.2f}× the basis)")
    line(f"  same, blocks of {4 * TILE_ROWS:,} models instead of {TILE_ROWS}", bigger)
    line(f"  its float64 product alone ({gflop:,.0f} GFLOP, tiles of {TILE_ROWS})", product, f"  ({gflop / product[0]:.1f} GFLOP/s)")
    line(f"crowd tax for the {n_stakers:,} stakers (crowd_tax's default)", taxed, f"  ({taxed[0] / n_stakers * 1e3:.2f} ms per model)")
    line(f"crowd tax for all {n_models:,} models", everyone, f"  ({everyone[0] / n_models * 1e3:.2f} ms per model)")


SECTIONS = ("numerai-tools", "stream", "ranking", "crowd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run these sections only")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}")
    quick = args.quick
    if "numerai-tools" in args.only:
        bench_against_numerai_tools(*((100, 1000, 1) if quick else (1000, 5000, 3)))
    if "stream" in args.only:
        bench_prepared(*((500, 1000, 2) if quick else (10_000, 6720, 5)))
    if "ranking" in args.only:
        bench_ranking(*((32, 1000, 2) if quick else (256, 6720, 9)))
    if "crowd" in args.only:
        bench_crowd(*((1000, 1000, 200) if quick else (10_000, 6720, 2000)))


if __name__ == "__main__":
    main()
