"""The crowding report: the seed article's four charts and headline figures, from ``mmc.scores``.

1. Read the ``scores`` topic from the beginning until caught up with the end offsets it had
   at start (:func:`read_score_messages`);
2. keep each model's latest update per round — the ``final`` one, else the highest ``day``
   (:class:`LatestScores`) — and turn them into a :class:`scoring.crowding.ScoreTable`
   (:func:`score_table_from_messages`);
3. :func:`scoring.crowding.crowding_report` computes every DESIGN §2.2 figure;
4. :func:`render_report` draws the charts (matplotlib, Agg, no pyplot state) and writes
   ``report.html`` beside the PNGs, and ``headline.json`` (:func:`headline_data`): the
   headline figures as numbers (null when undefined); :func:`headline` lists them next to
   the article's.

Which MMC: today's MMC — the scores' ``contribution`` field, the MMC payouts use and the one
the seed article measured (rounds 400 to ~1,000+, the 2× payout multiplier) — drives every
chart, decile table and the event study; the 2020 bootstrap MMC (the ``mmc`` field) is
computed beside it and shown as a second column / series, labelled "MMC 2020 (bootstrap)".
The ``mmc.crowding`` topic is not read: its per-round figures come from the same scores, and
the report recomputes everything across rounds from the scores themselves.

"First" and "last" of a trend are the mean of its first and last fifth of the rounds
(:func:`scoring.crowding.series_ends`), not single rounds.

The event study's mechanical part (the MMC a model would have had at its old stake, from
:func:`scoring.stake_counterfactual`) needs each round's predictions, which the ``scores``
topic does not carry. The worker computes it when the jump happens and attaches it to the
``crowding_tax`` alert as ``own_forecast`` (the model's MMC in the jump's round at the new
stake and re-scored at the old one): the report reads those from ``mmc.alerts``
(:func:`read_alerts`) and gives their median relative change beside the measured one
(:class:`MechanicalPart`). ``mmc whatif MODEL --stake S`` computes the same for any round whose
rows Redis still keeps.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``inputs``             what the report reads from the topics: latest scores, forecasts, alert rates
``headline``           the headline figures, as numbers and as rows beside the article's
``charts``             the four charts (matplotlib, Agg)
``page``               the files written: charts, ``report.html``, ``headline.json``
``leaderboard``        the leaderboard table: each model's standing over its window
``build``              the report built from the topics, and its headline for the terminal
=====================  ==========================================================================
"""

from __future__ import annotations

from streams.tools.report.build import BuiltReport, alert_rates_line, build_report, headline_table
from streams.tools.report.headline import LABEL_2020, LABEL_TODAY, REFERENCE, HeadlineRow, headline, headline_data
from streams.tools.report.inputs import (
    LatestScores,
    MechanicalPart,
    alert_rates,
    mechanical_part,
    read_alerts,
    read_score_messages,
    score_table_from_messages,
)
from streams.tools.report.leaderboard import leaderboard_rows, leaderboard_table
from streams.tools.report.page import CHART_FILES, HEADLINE_FILE, HTML_FILE, ReportFiles, render_report

__all__ = [
    "CHART_FILES",
    "HEADLINE_FILE",
    "HTML_FILE",
    "LABEL_2020",
    "LABEL_TODAY",
    "REFERENCE",
    "BuiltReport",
    "HeadlineRow",
    "LatestScores",
    "MechanicalPart",
    "ReportFiles",
    "alert_rates",
    "alert_rates_line",
    "build_report",
    "headline",
    "headline_data",
    "headline_table",
    "leaderboard_rows",
    "leaderboard_table",
    "mechanical_part",
    "read_alerts",
    "read_score_messages",
    "render_report",
    "score_table_from_messages",
]
