"""``mmc demo``: a simulated season streamed live through the embedded stack, then the report.

What a newcomer sees, in one command and with no Docker: the embedded broker and Redis start,
one worker starts, a seeded season from :mod:`streams.tools.simulation` streams into the input
topics (progress bars per topic), the terminal shows the live leaderboard (CORR, MMC, CWMM,
payout, stake) and the latest alerts while rounds resolve, and at the end the crowding report
is built from the service's own ``scores`` topic (HTML + PNG charts, headline figures beside
the seed article's). Everything stops cleanly afterwards, also on Ctrl-C.

The defaults are sized to finish within about three minutes on a 2-core machine; every size is
an option of ``mmc demo``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.errors import WorkerDied
from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client
from streams.tools.replay import send_events
from streams.tools.report import BuiltReport, alert_rates_line, build_report, headline_table
from streams.tools.simulation import Simulation, SimulationConfig
from streams.tools.simulation.calendar import target_days
from streams.tools.stack import EmbeddedStack

REFRESH_SECONDS = 0.5
LEADERS_SHOWN = 10
ALERTS_SHOWN = 6


#: The demo season beside the simulator's defaults (docs/simulation.md, which also says which
#: figure each drives): the founders lean more on the popular signal and today's arrivals less
#: (a steeper era gradient), crowd shares are less dispersed within an era, the targets have
#: Numerai's bucket shares (5/20/50/20/5%: half the ids in the middle bucket, so a round's
#: contribution is ~0.63× as noisy as with equal shares) and follow the signal a little more
#: closely (CORR ~0.03); a participant is paid half its payout score (Numerai's payout factor,
#: ``min(1, 72,000 NMR / total stake at risk)``, well below 1 today), so realised payouts
#: rarely reach the ±5% clip. New money (2% of the total stake per round) goes to the stakers
#: in proportion to their stake squared (the larger a stake, the more new capital it draws) up
#: to 4% of the total stake, and pro rata beyond (the leaders grow together); a staker on a
#: good run makes its one large reinvestment (5–8×) with probability 0.6% per round, with no
#: cap on how many do in a season.
DEMO_SEASON: dict[str, Any] = {
    "crowd_weight": 0.85,
    "newcomer_crowd_weight": 0.15,
    "crowd_concentration": 20.0,
    "target_buckets": (0.05, 0.2, 0.5, 0.2, 0.05),
    "target_signal_corr": 0.09,
    "payout_factor": 0.5,
    "inflow_rate": 0.02,
    "inflow_exponent": 2.0,
    "inflow_saturation": 0.04,
    "jump_probability": 0.006,
    "jump_range": (5.0, 8.0),
    "n_jumps": 1_000,  # no binding cap: the reinvestments spread over the season
}


@dataclass(frozen=True)
class DemoConfig:
    """The demo's knobs (the simulator's own defaults for everything not listed).

    120 models × 10,000 ids × 60 rounds: a tournament-sized universe, where one round's
    contribution varies from round to round by ~0.008 (standard deviation; ~0.011 at 5,000
    ids), and a season long enough for the event study's 20-round windows on both sides of a
    stake jump. A round's targets are final after 20 days and sent every 5th day (days 5, 10,
    15, 20): the payouts, the runs and the final scores are those of daily updates, at a
    quarter of the scoring work.
    """

    n_models: int = 120
    n_ids: int = 10_000
    n_rounds: int = 60
    resolution_days: int = 20
    target_every_days: int = 5
    seed: int = 2026
    out_dir: Path = Path("out/demo")
    workers: int = 1
    #: A full simulator configuration, overriding the sizes above (tests use ``SimulationConfig.small()``).
    simulation: SimulationConfig | None = None

    def season(self) -> SimulationConfig:
        if self.simulation is not None:
            return self.simulation
        return SimulationConfig(
            n_models=self.n_models,
            n_ids=self.n_ids,
            n_rounds=self.n_rounds,
            resolution_days=self.resolution_days,
            target_every_days=self.target_every_days,
            seed=self.seed,
            **DEMO_SEASON,
        )


#: The article the demo's headline compares with.
ARTICLE = "Meta-Model Crowding: The Tax on Success"

#: What each leaderboard column means, printed under it (the terminal has no tooltips).
LEADERBOARD_LEGEND = (
    "CORR: correlation of the model's ranked predictions with the targets. "
    "MMC: today's meta-model contribution, what the model adds to the stake-weighted meta model "
    "(the score payouts use); MMC'20: the 2020 bootstrap MMC beside it. "
    "CWMM: correlation with the meta model (near 1: the model is the crowd). "
    "payout: 0.5·CORR + 2·MMC, clipped at ±0.05. Means over the rolling window; n: rounds scored."
)


def _leaderboard_table(rows: list[dict[str, Any]]) -> Table:
    """The live leaderboard, 80 columns wide: three decimals, whole model names, a legend."""
    table = Table(title="live leaderboard (rolling window)", caption=LEADERBOARD_LEGEND, caption_justify="left", padding=(0, 1))
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True, min_width=9)
    for name in ("CORR", "MMC", "MMC'20", "CWMM", "payout", "stake", "n"):
        table.add_column(name, justify="right", no_wrap=True)

    def f(x: float | None) -> str:
        return "—" if x is None else f"{x:+.3f}"

    for i, row in enumerate(rows, 1):
        table.add_row(
            str(i),
            row["model"],
            f(row.get("corr_mean")),
            f(row.get("contribution_mean")),
            f(row.get("mmc_mean")),
            f(row.get("corr_w_mm_mean")),
            f(row.get("payout_mean")),
            f"{row.get('stake', 0.0):,.0f}",
            str(row.get("rounds", 0)),
        )
    return table


def _alerts_table(alerts: list[dict[str, Any]]) -> Table:
    table = Table(title="latest alerts", expand=True, show_header=False)
    table.add_column("kind", style="bold")
    table.add_column("message")
    style = {"crowding_tax": "red", "corr_w_mm_spike": "yellow", "crowding_trend": "magenta", "concentration": "cyan"}
    for a in alerts:
        table.add_row(f"[{style.get(a['kind'], 'white')}]{a['kind']}[/]" + (" (live)" if a.get("stage") == "live" else ""), a["message"])
    return table


async def _watch(
    settings: Settings,
    progress: Progress,
    resolved_task: TaskID,
    n_targets: int,
    live: Live,
    sending: asyncio.Task[Any],
    procs: list[subprocess.Popen[bytes]],
    log_dir: Path,
) -> None:
    """Redraw the leaderboard and alerts until every target update has been applied."""
    state = RedisState(redis_client(settings), settings.state_namespace)
    try:
        while True:
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                raise WorkerDied(f"worker {dead[0]} exited with {procs[dead[0]].returncode}; see {log_dir}/worker{dead[0]}.log")
            done = sum((await state.progress("targets")).values())
            progress.update(resolved_task, completed=min(done, n_targets))
            leaders = await state.leaderboard(LEADERS_SHOWN)
            alerts = await state.recent_alerts(ALERTS_SHOWN)
            live.update(Group(progress, _leaderboard_table(leaders), _alerts_table(alerts)))
            if done >= n_targets and sending.done():
                return
            if sending.done() and sending.exception() is not None:
                raise sending.exception()  # type: ignore[misc]
            await asyncio.sleep(REFRESH_SECONDS)
    finally:
        await state.close()


async def _stream(settings: Settings, config: DemoConfig, console: Console, procs: list[subprocess.Popen[bytes]]) -> None:
    season = config.season()
    simulation = Simulation(season)
    totals = simulation.event_counts()
    updates = len(target_days(season))
    console.print(
        f"simulated season: {season.n_models} models × {season.n_ids:,} ids × {season.n_rounds} rounds, "
        f"targets final after {season.resolution_days} days, {updates} target update{'s' if updates > 1 else ''} per round"
        f" — {sum(totals.values()):,} input events ({', '.join(f'{k} {v:,}' for k, v in sorted(totals.items()))})",
        highlight=False,
    )
    # The events are generated while they are sent, a round at a time (the predictions of a
    # whole season would not fit in memory as messages).
    events = simulation.events()
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks = {topic: progress.add_task(f"sent: {topic}", total=totals[topic]) for topic in ("rounds", "stakes", "submissions", "targets")}
    resolved = progress.add_task("scored: target updates", total=totals["targets"])

    def sent(topic: str, n: int) -> None:
        progress.advance(tasks[topic], n)

    with Live(progress, console=console, refresh_per_second=4, transient=False) as live:
        sending = asyncio.ensure_future(send_events(settings, events, progress=sent))
        try:
            await _watch(settings, progress, resolved, totals["targets"], live, sending, procs, config.out_dir)
        finally:
            if not sending.done():
                sending.cancel()
        await sending


def run_demo(config: DemoConfig, console: Console | None = None) -> BuiltReport:
    """Run the whole demo; returns the crowding report it built from the service's scores."""
    console = console or Console()
    began = time.perf_counter()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]mmc-stream demo")
    with EmbeddedStack() as stack:
        season = config.season()
        settings = Settings(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            app_id="mmc-demo",
            state_namespace="demo",
            web_enabled=False,
            kafka_security_protocol="PLAINTEXT",
            # Every round resolving at once stays in memory (a demo round's rows are ~0.4 MB):
            # target updates come day by day for ~resolution_days rounds in turn, and a smaller
            # cache reloads each round's rows from Redis at every update.
            round_cache_rounds=season.resolution_days + 4,
        )
        console.print(f"embedded stack up: broker {stack.kafka_bootstrap}, redis {stack.redis_url}", highlight=False)
        asyncio.run(create_topics(settings))
        env = {**os.environ, **settings.to_env()}
        logs = [open(out / f"worker{i}.log", "wb") for i in range(config.workers)]  # noqa: SIM115
        procs = [subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        console.print(f"{config.workers} worker(s) started (logs in {out}/worker*.log)", highlight=False)
        try:
            asyncio.run(_stream(settings, config, console, procs))
            console.print(f"season scored in {time.perf_counter() - began:.0f} s; building the crowding report …", highlight=False)
            built = asyncio.run(build_report(settings, out))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
    console.print(headline_table(built, f"crowding headline — computed by the service from its own stream, beside the article “{ARTICLE}”"))
    console.print(alert_rates_line(built), highlight=False)
    console.print(f"report: [bold]{built.files.html}[/bold]  charts: {', '.join(str(p) for p in built.files.charts.values())}")
    console.print(f"demo finished in {time.perf_counter() - began:.0f} s; broker, Redis and worker stopped.")
    return built
