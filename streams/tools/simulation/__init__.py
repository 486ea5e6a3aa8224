"""A reproducible tournament: a season of rounds, models, stakes and targets as input events.

Pure (numpy and the :mod:`scoring` library; no I/O, clock or environment): a
:class:`SimulationConfig` and its seed fully determine the event sequence, in every process.

The season is a behavioural model: participants with fixed traits submit every round, are paid
by :func:`scoring.payout_score` and move their stakes in response to their payouts. The crowding
figures of the seed article (DESIGN §2.2) are not written into it anywhere; they are what the
scoring core measures on the season (``docs/simulation.md`` holds the calibration).

Latent structure (per round ``r``, over its ids, from ``K`` id-level factors ``F_r``):

- **signal** ``s_r = βᵀF_r``: what the targets reward. The final targets are
  ``ρ_t·s_r + √(1−ρ_t²)·η`` bucketed by rank into ``{0, .25, .5, .75, 1}`` (20% each by
  default, :attr:`SimulationConfig.target_buckets`), ``ρ_t`` =
  :attr:`~SimulationConfig.target_signal_corr`.
- **crowd** ``c_r = γᵀF_r``: the common, popular signal (the example-model-like feature
  combination). ``γ`` has cosine :attr:`~SimulationConfig.crowd_signal_corr` with ``β``.
- **models** ``m``: ``latent = √(q_m k_m)·γ_mᵀF_r + √(q_m(1−k_m))·v_mᵀF_r + √(1−q_m)·ε``,
  submitted as ``Φ(latent)`` rounded to :attr:`~SimulationConfig.prediction_decimals`.
  ``γ_m`` is the crowd direction perturbed a little (the participant's version of the popular
  signal), ``v_m`` its own signal, partially aligned with the part of ``β`` the crowd misses.
  The signal share ``q_m``, the crowd share ``k_m`` and both directions are fixed traits: a
  model's predictions depend only on its traits and the round's factors and noise — never on
  its stake or anyone's.

Population and stakes (behaviour, keyed on time and payouts only):

- **incumbents** joined up to :attr:`~SimulationConfig.history_rounds` rounds before the
  season. The crowd share a participant brings depends on when it arrived: the founders
  averaged :attr:`~SimulationConfig.crowd_weight`, a participant arriving today
  :attr:`~SimulationConfig.newcomer_crowd_weight` (the tournament's models diversify over
  time). Everyone arrives with a small log-normal stake (:attr:`~SimulationConfig.stake_median`,
  :attr:`~SimulationConfig.stake_sigma`); an incumbent's stake at the season's start has grown
  with its tenure by reinvested payouts (log-growth :attr:`~SimulationConfig.stake_growth` per
  round, dispersion :attr:`~SimulationConfig.stake_growth_sd` per √round).
- **newcomers** (:attr:`~SimulationConfig.arrival_fraction` of the models) arrive during the
  season at a uniformly drawn round: they submit from then on, with a newcomer's stake and
  crowd share.
- :attr:`~SimulationConfig.zero_stake_fraction` of the models never stake.
- **payouts are reinvested**: when one of a staker's rounds resolves, its stake is multiplied
  by ``(1 + payout)``. The payout is Numerai's, ``clip(payout_factor · (0.5·CORR + 2·MMC),
  ±0.05)`` (:attr:`~SimulationConfig.payout_factor`), of the round's final CORR and
  contribution, from :func:`scoring.score_round` with the stakes in force at that round's close.
  Participants judge their runs by the payout score (:func:`scoring.payout_score`, no factor).
  The season starts mid-tournament: the rounds that resolve during the season's first weeks
  were played before it (simulated the same way, not emitted).
- **withdrawals**: a staker whose mean payout score over its last
  :attr:`~SimulationConfig.run_length` resolved rounds is negative withdraws, with probability
  :attr:`~SimulationConfig.withdraw_probability` per round, a share of its stake drawn from
  :attr:`~SimulationConfig.withdraw_share`.
- **large reinvestments**: a staker on a good run (mean payout score over its last ``run_length``
  resolved rounds ≥ :attr:`~SimulationConfig.run_threshold`) multiplies its stake by a factor
  drawn from :attr:`~SimulationConfig.jump_range` with probability
  :attr:`~SimulationConfig.jump_probability` per round — once per participant, at most
  :attr:`~SimulationConfig.n_jumps` in the season. They are recorded in
  :attr:`Simulation.jumps`. With :attr:`~SimulationConfig.jump_to_peer` the participant lifts
  its stake to that multiple of the stake-weighted mean stake instead (what an established
  participant stakes); only the lifts of at least ``jump_range[0]``× are jumps.

Calendar (simulated time from :attr:`~SimulationConfig.first_day_ms`, 2026-01-01T00:00Z by
default; ``o_r = r − start_round + 1``):

- round ``r`` opens at day ``o_r`` 00:00 and closes at 12:00 (day ``o_r + 0.5``); its
  submissions arrive in between (some models submit twice — the later one replaces the earlier
  — and a few skip the round);
- the stake updates for round ``r`` are sent at 18:00 of day ``o_r − 1``: after round
  ``r − 1`` closed and before ``r`` closes, so each applies from round ``r``;
- target day ``d`` (1..``resolution_days``) of round ``r`` arrives at day ``o_r + 1 + d``,
  06:00 (plus a second per round resolving that day), ``final`` on the last day; earlier days
  are the final latent plus a random walk that shrinks to zero (targets converge day by day);
  optionally some ids are ``null`` on early days (:attr:`~SimulationConfig.early_null_fraction`).
  Only every :attr:`~SimulationConfig.target_every_days`-th day and the final day are sent.
  A round's payout is therefore known from the stake evening ``resolution_days + 2`` rounds
  later.

Timestamps are strictly increasing within each topic, and :meth:`Simulation.events` yields
every event in non-decreasing timestamp order, so every submission of a round precedes its
close and every target update follows it.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``config``             :class:`SimulationConfig`, every knob, and the random streams of its seed
``population``         the models' fixed traits; submissions, payouts, stakes and jumps planned
``rounds``             a round's ids, submissions and target path, regenerated on demand
``calendar``           when each event happens; every event of the season in time order
``season``             :class:`Simulation` (the ground truth and :meth:`~Simulation.events`), :func:`simulate`
=====================  ==========================================================================
"""

from __future__ import annotations

from streams.tools.simulation.calendar import DAY_MS, HOUR_MS, TOPICS, SimEvent
from streams.tools.simulation.config import DEFAULT_FIRST_DAY_MS, SimulationConfig
from streams.tools.simulation.population import StakeJump
from streams.tools.simulation.season import Simulation, simulate

__all__ = ["DAY_MS", "DEFAULT_FIRST_DAY_MS", "HOUR_MS", "TOPICS", "SimEvent", "Simulation", "SimulationConfig", "StakeJump", "simulate"]
