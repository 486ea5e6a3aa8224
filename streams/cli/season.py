"""A season's events: ``mmc simulate`` makes them, ``mmc replay`` sends a file of them, ``mmc demo`` streams one live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from streams.cli.console import fail, settings_or_exit, stderr
from streams.errors import MmcStreamError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.tools.simulation import Simulation


def _send_with_progress(settings: Settings, events: Iterable[Any], totals: dict[str, int]) -> dict[str, int]:
    """Create the topics, then send ``events`` with one progress bar per topic (on stderr)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from streams.kafka.topics import create_topics
    from streams.tools.replay import send_events

    asyncio.run(create_topics(settings))
    with Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr(),
    ) as progress:
        tasks = {topic: progress.add_task(settings.topic(topic), total=total) for topic, total in totals.items()}

        def advance(topic: str, n: int) -> None:
            if topic not in tasks:
                tasks[topic] = progress.add_task(settings.topic(topic), total=None)
            progress.advance(tasks[topic], n)

        return asyncio.run(send_events(settings, events, progress=advance))


def simulate(
    out: Path | None = typer.Option(None, "--out", help="Write the events to this JSON Lines file."),
    send: bool = typer.Option(False, "--send", help="Send the events to the configured broker's input topics."),
    small: bool = typer.Option(
        False,
        "--small",
        help="Start from the small test preset (120 models × 600 ids × 30 rounds).",
    ),
    models: int | None = typer.Option(None, "--models", help="Models (default 300)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds (default 40)."),
    ids: int | None = typer.Option(None, "--ids", help="Ids per round (default 2,000)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default 2026): same seed, same events."),
    start_round: int | None = typer.Option(None, "--start-round", help="Number of the first round (default 1)."),
    jumps: int | None = typer.Option(
        None, "--jumps", help="At most this many large reinvestments (a stake raised ≥5× after a good run) in the season (default 12)."
    ),
    crowd_weight: float | None = typer.Option(
        None, "--crowd-weight", help="Mean crowd share of the founders' models; later arrivals lean on the crowd less (default 0.8)."
    ),
    early_nulls: float | None = typer.Option(None, "--early-nulls", help="Share of ids without a target on day 1 (default 0)."),
) -> None:
    """Simulate a tournament season and write it to a file (--out) or the topics (--send).

    Same options and seed give the same events, byte for byte. Prints a summary on stderr.

    With --send, reads MMC_KAFKA_* (connection), MMC_TOPIC_PREFIX, MMC_PARTITIONS and
    MMC_REPLICATION_FACTOR (it creates missing topics); --out alone reads no MMC_* setting.
    """
    from streams.tools.simulation import Simulation, SimulationConfig

    if out is None and not send:
        raise fail("say where the events go: --out FILE.jsonl and/or --send", code=2)
    knobs: dict[str, Any] = {
        "n_models": models,
        "n_rounds": rounds,
        "n_ids": ids,
        "seed": seed,
        "start_round": start_round,
        "n_jumps": jumps,
        "crowd_weight": crowd_weight,
        "early_null_fraction": early_nulls,
    }
    given = {name: value for name, value in knobs.items() if value is not None}
    try:
        config = SimulationConfig.small(**given) if small else SimulationConfig(**given)
    except ValueError as exc:
        raise fail(str(exc), code=2) from exc
    settings = settings_or_exit() if send else None
    console = stderr()
    began = time.perf_counter()
    simulation = Simulation(config)
    totals = simulation.event_counts()
    planned = time.perf_counter() - began
    console.print(
        f"season planned in {planned:.1f} s: {config.n_models} models × {config.n_ids} ids × "
        f"{config.n_rounds} rounds (seed {config.seed}), {len(simulation.jumps)} stake jumps, "
        f"{sum(totals.values()):,} events",
        highlight=False,
    )
    try:
        if out is not None:
            _write_with_progress(simulation, out, sum(totals.values()), console, began)
        if settings is not None:
            sent_began = time.perf_counter()
            sent = _send_with_progress(settings, simulation.events(), totals)
            console.print(
                f"sent {sum(sent.values()):,} events to {settings.kafka_bootstrap} in {time.perf_counter() - sent_began:.1f} s",
                highlight=False,
            )
    except (MmcStreamError, OSError) as exc:
        raise fail(str(exc)) from exc


def _write_with_progress(simulation: Simulation, out: Path, total: int, console: Console, began: float) -> None:
    """Write the season's events to ``out`` with a progress bar, then say how many and how large."""
    from rich.progress import Progress

    from streams.tools.replay import write_events

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"writing {out}", total=total)

        def counted() -> Iterator[Any]:
            for n, event in enumerate(simulation.events(), start=1):
                yield event
                if n % 500 == 0:
                    progress.update(task, completed=n)

        written = write_events(counted(), out)
    elapsed = time.perf_counter() - began
    size = out.stat().st_size
    console.print(
        f"wrote {written:,} events to {out} ({size / 1e6:,.1f} MB) in {elapsed:.1f} s",
        highlight=False,
    )


def replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="FILE", help="A JSON Lines event file (mmc simulate --out)."),
) -> None:
    """Send an event file to the configured broker's input topics, with progress per topic.

    Reads MMC_KAFKA_* (connection), MMC_TOPIC_PREFIX, MMC_PARTITIONS and
    MMC_REPLICATION_FACTOR (it creates missing topics).
    """
    from streams.tools.replay import count_events, read_events

    settings = settings_or_exit()
    began = time.perf_counter()
    try:
        sent = _send_with_progress(settings, read_events(file), count_events(file))
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    stderr().print(
        f"sent {sum(sent.values()):,} events ({', '.join(f'{topic} {n:,}' for topic, n in sorted(sent.items()))}) in {time.perf_counter() - began:.1f} s",
        highlight=False,
    )


def demo(
    models: int = typer.Option(120, help="Models in the simulated season."),
    ids: int = typer.Option(10_000, help="Ids per round."),
    rounds: int = typer.Option(60, help="Rounds."),
    days: int = typer.Option(20, help="Days until a round's targets are final (payouts are reinvested two days later)."),
    every: int = typer.Option(5, help="Days between a round's target updates; the final day always has one."),
    seed: int = typer.Option(2026, help="Simulator seed (the same seed gives the same season)."),
    workers: int = typer.Option(1, help="Worker processes sharing the partitions."),
    out: Path = typer.Option(Path("out/demo"), "--out", help="Directory for the report, charts and worker logs."),
) -> None:
    """The main job on the embedded stack: a simulated season streamed live, then the crowding report.

    Starts its own broker and Redis, so it reads no connection setting; the other MMC_*
    settings of the environment (MMC_TOPIC_PREFIX, MMC_PARTITIONS, the scoring and alert
    thresholds) apply to it and to its workers.
    """
    from streams.tools.demo import DemoConfig, run_demo

    config = DemoConfig(
        n_models=models,
        n_ids=ids,
        n_rounds=rounds,
        resolution_days=days,
        target_every_days=every,
        seed=seed,
        workers=workers,
        out_dir=out,
    )
    try:
        run_demo(config)
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
