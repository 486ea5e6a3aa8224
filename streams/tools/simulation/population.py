"""The season's participants: their fixed traits, and the stakes they move in response to their payouts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

import scoring
from streams.tools.simulation.config import STREAM_PLAN, SimulationConfig, stream_rng

if TYPE_CHECKING:
    from streams.tools.simulation.rounds import Rounds


@dataclass(frozen=True)
class StakeJump:
    """A large reinvestment: ``stake_after / stake_before`` ≥ ``jump_range[0]``."""

    model: str
    round: int
    factor: float
    stake_before: float
    stake_after: float


@dataclass(frozen=True, eq=False)
class Models:
    """Per-model constants drawn once per season."""

    ids: tuple[str, ...]
    signal_share: NDArray[np.float64]  # q_m
    crowd_share: NDArray[np.float64]  # k_m (fixed)
    crowd_direction: NDArray[np.float64]  # γ_m, [n_models, K] unit rows
    original_direction: NDArray[np.float64]  # v_m, [n_models, K] unit rows
    initial_stake: NDArray[np.float64]  # stake at the first round present (0: never stakes)
    arrival: NDArray[np.int64]  # round index of the first submission (0: incumbent)


def draw_models(cfg: SimulationConfig, rng: np.random.Generator, gamma: NDArray[np.float64], beta_perp: NDArray[np.float64]) -> Models:
    """Every model's fixed traits and the stake it arrives with, drawn once per season from ``rng``."""
    n, k_dim = cfg.n_models, cfg.n_factors
    width = max(3, len(str(n - 1)))
    ids = tuple(f"model_{m:0{width}d}" for m in range(n))
    # When each participant arrived: incumbents up to `history_rounds` before the season
    # (tenure > 0), newcomers at a round of the season (tenure 0, arrival ≥ 1).
    newcomer = rng.random(n) < cfg.arrival_fraction
    if cfg.n_rounds < 2:
        newcomer[:] = False
    arrival = np.where(newcomer, rng.integers(1, max(cfg.n_rounds, 2), size=n), 0)
    tenure = np.where(newcomer, 0.0, rng.uniform(0, cfg.history_rounds, size=n))
    # The crowd share a participant brings depends on its era: the founders leaned on the
    # popular signal, later arrivals less.
    era = tenure / cfg.history_rounds if cfg.history_rounds > 0 else np.zeros(n)
    mean_k = cfg.newcomer_crowd_weight + (cfg.crowd_weight - cfg.newcomer_crowd_weight) * era
    conc = cfg.crowd_concentration
    k = rng.beta(mean_k * conc, (1 - mean_k) * conc)
    q = rng.uniform(*cfg.signal_share_range, size=n)
    wander = rng.standard_normal((n, k_dim)) / math.sqrt(k_dim)
    crowd_direction = unit_rows(gamma + cfg.crowd_variation * wander)
    skill = rng.uniform(*cfg.originality_range, size=n)
    own = unit_rows(np.array([orthogonal(row, beta_perp) for row in rng.standard_normal((n, k_dim))]))
    original_direction = unit_rows(skill[:, None] * beta_perp + np.sqrt(1 - skill**2)[:, None] * own)
    # Stakes: a small log-normal stake on arrival, grown over the tenure by reinvested
    # payouts; some participants never stake.
    growth = cfg.stake_growth * tenure + cfg.stake_growth_sd * np.sqrt(tenure) * rng.standard_normal(n)
    stake = cfg.stake_median * np.exp(cfg.stake_sigma * rng.standard_normal(n) + growth)
    stakers = rng.random(n) >= cfg.zero_stake_fraction
    stake = np.where(stakers, np.round(np.maximum(stake, 10.0**-cfg.stake_decimals), cfg.stake_decimals), 0.0)
    return Models(ids, q, k, crowd_direction, original_direction, stake, arrival.astype(np.int64))


@dataclass(frozen=True, eq=False)
class Plan:
    """The season's ground truth, arrays indexed ``[round index, model index]`` (see :class:`~streams.tools.simulation.season.Simulation`)."""

    submitted: NDArray[np.bool_]
    resubmitted: NDArray[np.bool_]
    stakes: NDArray[np.float64]
    payouts: NDArray[np.float64]
    payout_scores: NDArray[np.float64]
    jumps: tuple[StakeJump, ...]


def plan_season(models: Models, rounds: Rounds, round_numbers: tuple[int, ...]) -> Plan:
    """Submissions, payouts and the stakes they lead to, round by round.

    Round index ``i`` (``< 0``: played before the season) resolves on the stake evening of
    round ``i + resolution_days + 2``; its payout is reinvested then, and the participants'
    runs of payouts (the last ``run_length`` resolved rounds) decide withdrawals and large
    reinvestments.
    """
    return _Planner(models, rounds, round_numbers).plan()


class _Planner:
    """The state :func:`plan_season` carries from one round to the next (one random stream for all)."""

    def __init__(self, models: Models, rounds: Rounds, round_numbers: tuple[int, ...]) -> None:
        cfg = rounds.config
        self.cfg, self.models, self.rounds, self.round_numbers = cfg, models, rounds, round_numbers
        n, n_rounds = cfg.n_models, cfg.n_rounds
        self.lag = cfg.resolution_days + 2
        self.past = self.lag - 1 + cfg.run_length  # rounds before the season whose payouts count
        self.rng = stream_rng(cfg, STREAM_PLAN, 0)
        self.present = np.arange(n_rounds)[:, None] >= models.arrival[None, :]
        self.submitted = (self.rng.random((n_rounds, n)) >= cfg.skip_fraction) & self.present
        self.resubmitted = (self.rng.random((n_rounds, n)) < cfg.resubmit_fraction) & self.submitted
        self.past_submitted = (self.rng.random((self.past, n)) >= cfg.skip_fraction) & (models.arrival == 0)
        # Payout scores (what a participant judges its run by) and realised payouts (what its
        # stake grows by) of every round, indexed by round index + past.
        self.score = np.full((self.past + n_rounds, n), np.nan)
        self.paid = np.full((self.past + n_rounds, n), np.nan)
        self.jumped = np.zeros(n, dtype=bool)
        self.jumps: list[StakeJump] = []

    def plan(self) -> Plan:
        cfg, models, past = self.cfg, self.models, self.past
        n, n_rounds = cfg.n_models, cfg.n_rounds
        staker = models.initial_stake > 0
        incumbent_stake = np.where(models.arrival == 0, models.initial_stake, 0.0)
        for i in range(-past, 0):
            self.score[i + past], self.paid[i + past] = round_payouts(self.rounds, i, self.past_submitted[i + past], incumbent_stake)
        stakes = np.zeros((n_rounds, n))
        stake = incumbent_stake.copy()
        for j in range(n_rounds):
            previous = stake.copy()
            if j > 0:
                stake = self._evening(j, stake, previous)
            # Newcomers stake on arrival.
            arriving = (models.arrival == j) & (j > 0) & staker
            stake[arriving] = models.initial_stake[arriving]
            stakes[j] = stake
            self.resubmitted[j] &= self.submitted[j]
            if j + self.lag < n_rounds:  # resolves in the season: its payout is reinvested
                self.score[j + past], self.paid[j + past] = round_payouts(self.rounds, j, self.submitted[j], stake)
        return Plan(
            submitted=self.submitted,
            resubmitted=self.resubmitted,
            stakes=stakes,
            payouts=self.paid[past:].copy(),
            payout_scores=self.score[past:].copy(),
            jumps=tuple(sorted(self.jumps, key=lambda e: (e.round, e.model))),
        )

    def _evening(self, j: int, stake: NDArray[np.float64], previous: NDArray[np.float64]) -> NDArray[np.float64]:
        """The stake evening before round index ``j``: the payouts of the round resolving tonight
        reinvested, withdrawals after a losing run, large reinvestments after a good one."""
        cfg, past, rng = self.cfg, self.past, self.rng
        n = cfg.n_models
        scale = 10.0**cfg.stake_decimals
        # Reinvest the payouts of the round resolving tonight.
        i = j - self.lag
        if i >= -past:
            stake = np.round(stake * (1 + np.nan_to_num(self.paid[i + past])), cfg.stake_decimals)
        stake = self._inflow(stake)
        # Each participant's run: mean payout over its last `run_length` resolved rounds.
        last = j - self.lag
        window = self.score[max(0, last + past - cfg.run_length + 1) : last + past + 1]
        counted = np.isfinite(window).sum(axis=0)
        run = np.where(
            counted >= max(1, cfg.run_length // 2),
            np.nansum(window, axis=0) / np.maximum(counted, 1),
            np.nan,
        )
        draws = rng.random((3, n))
        active = (previous > 0) & self.present[j]
        # Withdrawals after a losing run.
        losing = active & (run < 0) & (draws[0] < cfg.withdraw_probability)
        share = cfg.withdraw_share[0] + (cfg.withdraw_share[1] - cfg.withdraw_share[0]) * draws[1]
        stake = np.where(losing, np.round(stake * (1 - share), cfg.stake_decimals), stake)
        # Large reinvestments after a good run (once per participant).
        good = active & ~self.jumped & (run >= cfg.run_threshold) & (draws[2] < cfg.jump_probability) & self.submitted[j - 1]
        # The stake-weighted mean stake (the stake behind a typical staked NMR), for jump_to_peer.
        peer = float((stake**2).sum() / stake.sum()) if cfg.jump_to_peer > 0 and good.any() else 0.0
        for m in rng.permutation(np.flatnonzero(good)):
            if len(self.jumps) >= cfg.n_jumps:
                break
            factor = jump_factor(cfg, rng) if cfg.jump_to_peer <= 0 else peer_factor(cfg, rng, peer, float(previous[m]))
            if factor <= 1:
                continue  # already staked at its peers' level: no reinvestment
            after = math.ceil(previous[m] * factor * scale) / scale
            stake[m] = after
            self.jumped[m] = True
            if factor >= cfg.jump_range[0]:
                self.submitted[j, m] = True
                self.jumps.append(StakeJump(self.models.ids[m], self.round_numbers[j], factor, float(previous[m]), after))
        return stake

    def _inflow(self, stake: NDArray[np.float64]) -> NDArray[np.float64]:
        """New money joining tonight, ``inflow_rate`` of the total stake, shared among the
        stakers (a stake is never withdrawn whole, and newcomers stake from their arrival) in
        proportion to ``stake ** inflow_exponent``, saturating at ``inflow_saturation`` of the
        total stake when that is set."""
        cfg = self.cfg
        staked = stake > 0
        if cfg.inflow_rate <= 0 or not staked.any():
            return stake
        held = np.where(staked, stake, 1.0)  # the stakers' stakes (1 elsewhere: weighted 0 below)
        saturation = cfg.inflow_saturation * stake.sum() if cfg.inflow_saturation > 0 else math.inf
        weight = np.where(staked, held * np.minimum(held, saturation) ** (cfg.inflow_exponent - 1), 0.0)
        new = cfg.inflow_rate * stake.sum() * weight / weight.sum()
        return np.asarray(np.round(stake + new, cfg.stake_decimals), dtype=np.float64)


def jump_factor(config: SimulationConfig, rng: np.random.Generator) -> float:
    """A large reinvestment's stake multiple (:attr:`SimulationConfig.jump_tail`)."""
    low, high = config.jump_range
    if config.jump_tail <= 0:
        return float(rng.uniform(low, high))
    return float(min(high, low * (1.0 - rng.random()) ** (-1.0 / config.jump_tail)))


def peer_factor(config: SimulationConfig, rng: np.random.Generator, peer: float, previous: float) -> float:
    """The multiple that lifts a stake of ``previous`` to ``jump_to_peer`` × the stake-weighted
    mean stake ``peer`` (spread by a log-normal factor of σ ``jump_peer_sigma``), at most
    ``jump_range[1]``×."""
    target = config.jump_to_peer * peer * math.exp(config.jump_peer_sigma * rng.standard_normal())
    return float(min(config.jump_range[1], target / previous))


def round_payouts(rounds: Rounds, i: int, submitted: NDArray[np.bool_], stake: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Payout score and realised payout per model of round index ``i`` (NaN for models that skip it)."""
    cfg = rounds.config
    rows = np.flatnonzero(submitted)
    score = np.full(cfg.n_models, np.nan)
    paid = np.full(cfg.n_models, np.nan)
    if rows.size == 0 or not (stake[rows] > 0).any():
        return score, paid
    data = rounds.data(i)
    scores = scoring.score_round(data.predictions[rows], stake[rows], data.targets[-1], round=abs(cfg.start_round + i))
    corr, contribution = np.nan_to_num(scores.corr), np.nan_to_num(scores.contribution)
    multipliers = {"corr_multiplier": cfg.payout_corr_multiplier, "mmc_multiplier": cfg.payout_mmc_multiplier, "clip": cfg.payout_clip}
    score[rows] = scoring.payout_score(corr, contribution, **multipliers)
    # Numerai's payout: clip(payout_factor · (0.5·CORR + 2·MMC), ±0.05), the factor inside the clip.
    paid[rows] = scoring.payout_score(cfg.payout_factor * corr, cfg.payout_factor * contribution, **multipliers)
    return score, paid


def unit(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(x / np.linalg.norm(x), dtype=np.float64)


def unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float64)


def orthogonal(x: NDArray[np.float64], direction: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x`` minus its projection on the unit vector ``direction``."""
    return x - (x @ direction) * direction
