"""Reading what the service published: ``mmc tail`` (a topic), ``mmc report`` (the crowding report), ``mmc whatif`` (a model at another stake)."""

from __future__ import annotations

import asyncio
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from streams.cli.console import fail, settings_or_exit, stderr
from streams.errors import MmcStreamError


class TopicName(StrEnum):
    """Short names of every topic `mmc tail` can read."""

    scores = "scores"
    alerts = "alerts"
    leaderboard = "leaderboard"
    crowding = "crowding"
    neighbours = "neighbours"
    deadletter = "deadletter"
    rounds = "rounds"
    submissions = "submissions"
    stakes = "stakes"
    targets = "targets"


def _topic_name(value: str) -> str:
    """``mmc tail``'s TOPIC argument: one of :class:`TopicName`."""
    if value not in TopicName.__members__:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(TopicName)}")
    return value


def tail(
    topic: str = typer.Argument(
        ...,
        metavar="TOPIC",
        callback=_topic_name,
        help=f"One of {', '.join(TopicName)} (the prefix comes from MMC_TOPIC_PREFIX).",
    ),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest message, not the newest."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after this many messages."),
    group: str | None = typer.Option(None, "--group", help="Join this consumer group and commit (resumes later)."),
    until_end: bool = typer.Option(False, "--until-end", help="Stop once caught up with the topic's current end."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Each message whole, as one JSON object per line (for jq): its value as sent, with topic, partition, offset, timestamp, key and headers.",
    ),
) -> None:
    """Print a topic's messages, one compact line each, until Ctrl-C (or --limit / --until-end).

    A line is the event time, the topic, the key and the topic's main fields, floats to 4
    significant digits (lists as their length); --json prints every message whole.

    Reads MMC_KAFKA_* (connection) and MMC_TOPIC_PREFIX; with --group also
    MMC_BROKER_SESSION_TIMEOUT and MMC_BROKER_HEARTBEAT_INTERVAL.
    """
    import orjson

    from streams.tools.tail import describe
    from streams.tools.tail import tail as tail_topic

    settings = settings_or_exit()
    if until_end and group is not None:
        raise fail("--until-end reads without a group; drop --group", code=2)
    # In a terminal one line per message, cut at its width; into a pipe or file, whole lines.
    console = Console()
    fit: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis", "crop": True} if sys.stdout.isatty() else {"soft_wrap": True}

    async def run() -> int:
        shown = 0
        async for message in tail_topic(
            settings,
            topic,
            from_beginning=from_beginning,
            limit=limit,
            group=group,
            until_end=until_end,
        ):
            if as_json:
                line = {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "timestamp_ms": message.timestamp_ms,
                    "key": message.key,
                    "value": message.value,
                    "headers": dict(message.headers),
                }
                sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
                sys.stdout.flush()
            else:
                console.print(describe(message), **fit)
            shown += 1
        return shown

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc


def report(
    out: Path = typer.Option(Path("report"), "--out", help="Directory for report.html and the PNG charts."),
    top: int = typer.Option(20, "--top", min=1, help="Rows of the leaderboard table to print."),
) -> None:
    """Read the scores topic, write the crowding report (HTML + 4 charts), print the headline and the leaderboard.

    Reads MMC_KAFKA_* (connection) and MMC_TOPIC_PREFIX (the scores and alerts topics).
    """
    from streams.tools.report import alert_rates_line, build_report, headline_table, leaderboard_table

    settings = settings_or_exit()
    began = time.perf_counter()
    try:
        built = asyncio.run(build_report(settings, out))
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    if built.report.n_observations == 0:
        stderr().print(
            f"[yellow]no scores on {settings.topic('scores')} yet[/yellow] - is a worker running? (empty charts written to {out})",
            highlight=False,
        )
    Console().print(headline_table(built))
    Console().print(alert_rates_line(built), highlight=False)
    Console().print(leaderboard_table(built.leaderboard, top))
    stderr().print(
        f"read {built.messages_read:,} score updates in {time.perf_counter() - began:.1f} s; wrote {built.files.html} and {len(built.files.charts)} charts",
        highlight=False,
    )


def whatif(
    model: str = typer.Argument(..., metavar="MODEL", help="Model id."),
    stake_multiplier: float | None = typer.Option(None, "--stake-multiplier", "-k", min=0, help="Multiply the model's stake by K."),
    stake: float | None = typer.Option(
        None,
        "--stake",
        min=0,
        help="Set the model's stake to X (works for a model with no stake; after a jump from S, --stake S gives the jump's mechanical part).",
    ),
    rounds: int = typer.Option(5, min=1, help="How many of the model's latest scored rounds."),
) -> None:
    """A model's recent MMC, contribution and CWMM had its stake been K× or X (from the service's state).

    Both sides use the deployment's bootstrap settings, so the actual side is the MMC the
    service published.

    Reads MMC_REDIS_* (connection), MMC_STATE_NAMESPACE, and MMC_MMC_DRAWS, MMC_MMC_FRACTION,
    MMC_SEED_SALT and MMC_MAX_MISSING_RATIO (give them the workers' values).
    """
    from streams.tools.whatif import mean_change, mechanical, stake_whatif, whatif_table

    if (stake_multiplier is None) == (stake is None):
        raise fail("give exactly one of --stake-multiplier K and --stake X")
    settings = settings_or_exit()
    try:
        rows = asyncio.run(stake_whatif(settings, model, stake_multiplier, rounds, stake=stake))
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    change = f"stake × {stake_multiplier:g}" if stake is None else f"stake = {stake:,.2f}"
    Console().print(whatif_table(model, rows, change))
    if rows:
        d_mmc, d_contribution = mean_change(rows)
        stderr().print(
            f"mean change: MMC (today's: contribution) {d_contribution:+.4f}, MMC 2020 (bootstrap) {d_mmc:+.4f} over {len(rows)} rounds",
            highlight=False,
        )
        if stake is not None and all(r.counterfactual.stake > stake for r in rows):
            part = mechanical(rows)
            stderr().print(
                f"mechanical part of the larger stake (actual − at {stake:,.2f}): MMC (today's) {part.contribution:+.4f}, MMC 2020 {part.mmc:+.4f}",
                highlight=False,
            )
        if stake is None and all(r.counterfactual.stake == 0 for r in rows):
            stderr().print(
                "the model had no stake in these rounds: a multiple of zero is still zero; ask with --stake X instead",
                highlight=False,
            )
