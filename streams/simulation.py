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
  :attr:`Simulation.jumps`.

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
  A round's payout is therefore known from the stake evening ``resolution_days + 2`` rounds
  later.

Timestamps are strictly increasing within each topic, and :meth:`Simulation.events` yields
every event in non-decreasing timestamp order, so every submission of a round precedes its
close and every target update follows it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr
from scipy.stats import rankdata

import scoring

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: 2026-01-01T00:00:00Z — the default first simulated day.
DEFAULT_FIRST_DAY_MS = 1_767_225_600_000

# Times of day of each kind of event (ms after midnight of the simulated day).
_OPEN_AT = 0
_CLOSE_AT = 12 * HOUR_MS
_TARGETS_AT = 6 * HOUR_MS
_STAKES_AT = 18 * HOUR_MS
# Spacing of the stake updates of one evening and of the target updates of one morning.
_STAKE_SPACING_MS = 100
_TARGET_SPACING_MS = 1_000

#: Short names of the input topics the simulator writes (DESIGN §3).
TOPICS: tuple[str, ...] = ("rounds", "submissions", "stakes", "targets")
# Tie-break between topics at one timestamp (never needed with the calendar above, but it
# keeps the order total): lifecycle first, then stakes, submissions, targets.
_TOPIC_ORDER = {"rounds": 0, "stakes": 1, "submissions": 2, "targets": 3}

# Independent random streams, one per purpose: ``default_rng([seed, stream, round])``.
_STREAM_MODELS = 0
_STREAM_FACTORS = 1
_STREAM_PREDICTIONS = 2
_STREAM_TARGETS = 3
_STREAM_CALENDAR = 4
_STREAM_PLAN = 5
_STREAM_IDS = 6
# Offset of the streams of the rounds played before the season.
_PAST_STREAMS = 100


@dataclass(frozen=True)
class SimulationConfig:
    """Every knob of a simulated season (defaults: ~300 models × 2,000 ids × 40 rounds).

    Size and calendar:
        n_models, n_rounds, n_ids: models, rounds and ids per round.
        seed: the only source of randomness.
        start_round: number of the first round.
        first_day_ms: epoch ms of simulated day 0 (round ``start_round`` opens on day 1).
        resolution_days: target updates per round; the last is ``final``.
        id_pool_factor: each round's universe is ``n_ids`` ids drawn from a pool this much
            larger (ids repeat across rounds, not always in the same order or set).

    Latent structure (fixed traits of each model):
        n_factors: id-level factors per round (``K``).
        target_signal_corr: correlation of the final target latent with the signal (``ρ_t``).
        crowd_signal_corr: cosine of the crowd direction with the signal direction.
        crowd_weight: mean crowd share ``k`` of the founders (the earliest participants).
        newcomer_crowd_weight: mean crowd share of a participant arriving now; arrivals in
            between interpolate linearly in time.
        crowd_concentration: Beta concentration of ``k`` around that mean.
        crowd_variation: how far a model's version of the crowd strays from it (0 = identical).
        signal_share_range: range of ``q`` (1 − noise share) across models.
        originality_range: range of the cosine of a model's own direction with the part of
            the signal the crowd misses.

    Population and stakes:
        history_rounds: the oldest incumbent joined this many rounds before the season.
        arrival_fraction: share of the models that arrive during the season.
        zero_stake_fraction: share of models that never stake.
        stake_median, stake_sigma: log-normal stake a participant arrives with (NMR).
        stake_growth, stake_growth_sd: log-growth of an incumbent's stake per round of tenure
            (reinvested payouts before the season) and its dispersion per √round.
        stake_decimals: stakes are sent rounded to this many decimals.
        run_length: resolved rounds over which a participant judges its run of payouts.
        run_threshold: mean payout over the run that counts as a good run.
        jump_probability: chance per round that a staker on a good run makes its one large
            reinvestment.
        n_jumps: at most this many large reinvestments in the season.
        jump_range: the reinvestment's stake multiple lies in this range (≥ 5× makes it an
            event of the crowding-tax study).
        jump_tail: 0: the multiple is uniform in ``jump_range``; above 0: Pareto with this tail
            index from ``jump_range[0]``, capped at ``jump_range[1]`` (most reinvestments near
            the low end, a few far above it).
        withdraw_probability: chance per round that a staker with a negative run withdraws.
        withdraw_share: the share of its stake it withdraws, uniform in this range.
        payout_corr_multiplier, payout_mmc_multiplier, payout_clip: the payout score,
            :func:`scoring.payout_score` of the round's CORR and contribution.
        payout_factor: the realised payout (the share of its stake a participant is paid) is
            ``clip(payout_factor · (0.5·CORR + 2·MMC), ±payout_clip)``, as Numerai's, whose
            factor is ``min(1, 72,000 NMR / total stake at risk)``; fixed here.

    Submissions and targets:
        resubmit_fraction: chance that a model submits twice in a round (the later counts).
        skip_fraction: chance that a model skips a round (never around its stake jump).
        prediction_decimals: predictions are sent rounded to this many decimals.
        target_buckets: share of the ids in each target bucket 0, .25, .5, .75, 1.
        daily_noise: std of the target latent's deviation on day 1 (0 on the final day).
        early_null_fraction: share of ids without a target on day 1, falling linearly to 0
            after ``early_null_days`` (default 0: every id resolves from day 1). Above 0.2
            the service refuses to score the update (DESIGN §2).
        early_null_days: days with missing ids when ``early_null_fraction`` > 0.
    """

    n_models: int = 300
    n_rounds: int = 40
    n_ids: int = 2000
    seed: int = 2026
    start_round: int = 1
    first_day_ms: int = DEFAULT_FIRST_DAY_MS
    resolution_days: int = 20
    id_pool_factor: float = 1.25

    n_factors: int = 10
    target_signal_corr: float = 0.07
    crowd_signal_corr: float = 0.6
    crowd_weight: float = 0.8
    newcomer_crowd_weight: float = 0.25
    crowd_concentration: float = 6.0
    crowd_variation: float = 0.1
    signal_share_range: tuple[float, float] = (0.15, 0.3)
    originality_range: tuple[float, float] = (0.6, 0.95)

    history_rounds: int = 300
    arrival_fraction: float = 0.2
    zero_stake_fraction: float = 0.25
    stake_median: float = 20.0
    stake_sigma: float = 0.5
    stake_growth: float = 0.008
    stake_growth_sd: float = 0.02
    stake_decimals: int = 4
    run_length: int = 8
    run_threshold: float = 0.01
    jump_probability: float = 0.015
    n_jumps: int = 12
    jump_range: tuple[float, float] = (5.0, 30.0)
    jump_tail: float = 0.0
    withdraw_probability: float = 0.1
    withdraw_share: tuple[float, float] = (0.1, 0.5)
    payout_corr_multiplier: float = 0.5
    payout_mmc_multiplier: float = 2.0
    payout_clip: float = 0.05
    payout_factor: float = 1.0

    resubmit_fraction: float = 0.1
    skip_fraction: float = 0.02
    prediction_decimals: int = 5
    target_buckets: tuple[float, float, float, float, float] = (0.2, 0.2, 0.2, 0.2, 0.2)
    daily_noise: float = 0.3
    early_null_fraction: float = 0.0
    early_null_days: int = 3

    def __post_init__(self) -> None:
        checks = {
            "n_models >= 2": self.n_models >= 2,
            "n_rounds >= 1": self.n_rounds >= 1,
            "n_ids >= 10": self.n_ids >= 10,
            "start_round >= 0": self.start_round >= 0,
            "first_day_ms >= 0": self.first_day_ms >= 0,
            "resolution_days >= 1": self.resolution_days >= 1,
            "id_pool_factor >= 1": self.id_pool_factor >= 1,
            "n_factors >= 3": self.n_factors >= 3,
            "0 < target_signal_corr < 1": 0 < self.target_signal_corr < 1,
            "0 <= crowd_signal_corr < 1": 0 <= self.crowd_signal_corr < 1,
            "0 < crowd_weight < 1": 0 < self.crowd_weight < 1,
            "0 < newcomer_crowd_weight < 1": 0 < self.newcomer_crowd_weight < 1,
            "crowd_concentration > 0": self.crowd_concentration > 0,
            "crowd_variation >= 0": self.crowd_variation >= 0,
            "0 < signal_share_range <= 1, ordered": 0 < self.signal_share_range[0] <= self.signal_share_range[1] <= 1,
            "0 <= originality_range <= 1, ordered": 0 <= self.originality_range[0] <= self.originality_range[1] <= 1,
            "history_rounds >= 0": self.history_rounds >= 0,
            "0 <= arrival_fraction < 1": 0 <= self.arrival_fraction < 1,
            "0 <= zero_stake_fraction < 1": 0 <= self.zero_stake_fraction < 1,
            "stake_median > 0": self.stake_median > 0,
            "stake_sigma >= 0": self.stake_sigma >= 0,
            "stake_growth_sd >= 0": self.stake_growth_sd >= 0,
            "stake_decimals >= 0": self.stake_decimals >= 0,
            "run_length >= 1": self.run_length >= 1,
            "0 <= jump_probability <= 1": 0 <= self.jump_probability <= 1,
            "n_jumps >= 0": self.n_jumps >= 0,
            "1 <= jump_range, ordered": 1 <= self.jump_range[0] <= self.jump_range[1],
            "jump_tail >= 0": self.jump_tail >= 0,
            "0 <= withdraw_probability <= 1": 0 <= self.withdraw_probability <= 1,
            "0 <= withdraw_share < 1, ordered": 0 <= self.withdraw_share[0] <= self.withdraw_share[1] < 1,
            "payout_clip > 0": self.payout_clip > 0,
            "0 < payout_factor <= 1": 0 < self.payout_factor <= 1,
            "0 <= resubmit_fraction <= 1": 0 <= self.resubmit_fraction <= 1,
            "0 <= skip_fraction < 1": 0 <= self.skip_fraction < 1,
            "1 <= prediction_decimals <= 15": 1 <= self.prediction_decimals <= 15,
            "5 target_buckets > 0 summing to 1": len(self.target_buckets) == 5 and min(self.target_buckets) > 0 and math.isclose(sum(self.target_buckets), 1.0),
            "daily_noise >= 0": self.daily_noise >= 0,
            "0 <= early_null_fraction < 1": 0 <= self.early_null_fraction < 1,
            "early_null_days >= 1": self.early_null_days >= 1,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SimulationConfig: {', '.join(failed)}")

    @classmethod
    def small(cls, **overrides: Any) -> SimulationConfig:
        """A season for tests: 120 models × 600 ids × 30 rounds (about a second).

        The same behaviour as the default season at a smaller size. Its targets follow the
        signal more closely (``target_signal_corr`` 0.12): with 600 ids the scores are noisier.
        """
        base: dict[str, Any] = {
            "n_models": 120,
            "n_rounds": 30,
            "n_ids": 600,
            "target_signal_corr": 0.12,
        }
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One input message: short topic name, key, record timestamp and JSON value (DESIGN §3)."""

    topic: str
    key: str
    timestamp_ms: int
    value: dict[str, Any]


@dataclass(frozen=True)
class StakeJump:
    """A large reinvestment: ``stake_after / stake_before`` ≥ ``jump_range[0]``."""

    model: str
    round: int
    factor: float
    stake_before: float
    stake_after: float


@dataclass(frozen=True, eq=False)
class _Models:
    """Per-model constants drawn once per season."""

    ids: tuple[str, ...]
    signal_share: NDArray[np.float64]  # q_m
    crowd_share: NDArray[np.float64]  # k_m (fixed)
    crowd_direction: NDArray[np.float64]  # γ_m, [n_models, K] unit rows
    original_direction: NDArray[np.float64]  # v_m, [n_models, K] unit rows
    initial_stake: NDArray[np.float64]  # stake at the first round present (0: never stakes)
    arrival: NDArray[np.int64]  # round index of the first submission (0: incumbent)


@dataclass(frozen=True, eq=False)
class _RoundData:
    """One round's ids, submissions and target path (regenerated on demand, deterministic)."""

    ids: list[str]
    predictions: NDArray[np.float64]  # final submission per model, [n_models, n_ids]
    first_predictions: NDArray[np.float64]  # the replaced first submission (resubmitters)
    targets: NDArray[np.float64]  # [resolution_days, n_ids], NaN = not resolved yet


@dataclass(eq=False)
class Simulation:
    """A planned season: the ground truth (styles, stakes, jumps) and its event stream.

    Constructing one plans the season (stakes need each round's realised payout, so the rounds
    that resolve inside the season are scored once with :func:`scoring.score_round`);
    :meth:`events` then generates the messages lazily, a round at a time.

    Ground truth, arrays indexed ``[round index, model index]`` in :attr:`models` order:

    Attributes:
        config: the configuration.
        models: model ids, ``model_000`` …
        rounds: round numbers, ascending.
        stakes: the stake in force at each round's close (what the stake messages say).
        crowd_share: each model's crowd share ``k`` in each round (a fixed trait: the same in
            every round).
        arrival: round index at which each model starts submitting (0 for incumbents).
        submitted: whether the model submits to the round.
        resubmitted: whether it submits twice (the second replaces the first).
        payout_scores: payout score per round, :func:`scoring.payout_score` of its CORR and
            contribution (NaN when the round is not scored in-season or the model did not
            submit): what a participant judges its run by.
        payouts: realised payout per round as a share of the stake,
            ``clip(payout_factor · (0.5·CORR + 2·contribution), ±payout_clip)``: what the stake
            grows by (NaN as above).
        jumps: the large reinvestments (≥ ``jump_range[0]``× between adjacent rounds) that
            happened, by round then model.
    """

    config: SimulationConfig
    models: tuple[str, ...] = field(init=False)
    rounds: tuple[int, ...] = field(init=False)
    stakes: NDArray[np.float64] = field(init=False)
    crowd_share: NDArray[np.float64] = field(init=False)
    submitted: NDArray[np.bool_] = field(init=False)
    resubmitted: NDArray[np.bool_] = field(init=False)
    payouts: NDArray[np.float64] = field(init=False)
    payout_scores: NDArray[np.float64] = field(init=False)
    jumps: tuple[StakeJump, ...] = field(init=False)
    arrival: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        rng = self._rng(_STREAM_MODELS, 0)
        k_dim = cfg.n_factors
        beta = _unit(rng.standard_normal(k_dim))
        gamma = _unit(cfg.crowd_signal_corr * beta + math.sqrt(1 - cfg.crowd_signal_corr**2) * _unit(_orthogonal(rng.standard_normal(k_dim), beta)))
        beta_perp = _unit(_orthogonal(beta, gamma))  # the part of the signal the crowd misses
        self._beta = beta
        self._gamma = gamma
        self._pool = self._id_pool()
        self._models = self._draw_models(rng, gamma, beta_perp)
        self.models = self._models.ids
        self.rounds = tuple(range(cfg.start_round, cfg.start_round + cfg.n_rounds))
        self._plan()

    # --- public API --------------------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        """Every input message of the season, in non-decreasing timestamp order."""
        cfg = self.config
        cache: dict[int, _RoundData] = {}
        last_day = {i: cfg.resolution_days for i in range(cfg.n_rounds)}
        for entry in self._schedule:
            ts, _, kind, i, extra = entry
            r = self.rounds[i]
            if i not in cache:
                cache[i] = self._round_data(i, first=True)
            data = cache[i]
            if kind == "open":
                yield SimEvent("rounds", str(r), ts, {"type": "open", "round": r, "ids": list(data.ids)})
            elif kind == "close":
                yield SimEvent("rounds", str(r), ts, {"type": "close", "round": r})
                # Only the targets are needed from now on: drop the predictions.
                cache[i] = _RoundData(data.ids, _EMPTY, _EMPTY, data.targets)
            elif kind in ("submit", "resubmit_first"):
                rows = data.first_predictions if kind == "resubmit_first" else data.predictions
                model = self.models[extra]
                yield SimEvent(
                    "submissions",
                    model,
                    ts,
                    {"round": r, "model": model, "predictions": rows[extra].tolist()},
                )
            elif kind == "stake":
                model = self.models[extra]
                yield SimEvent("stakes", model, ts, {"model": model, "stake": float(self.stakes[i, extra])})
            else:  # target day `extra`
                day = extra
                values = data.targets[day - 1]
                targets = [None if math.isnan(v) else v for v in values.tolist()]
                yield SimEvent(
                    "targets",
                    str(r),
                    ts,
                    {
                        "round": r,
                        "day": day,
                        "final": day == cfg.resolution_days,
                        "targets": targets,
                    },
                )
                if day == last_day[i]:
                    del cache[i]

    def event_counts(self) -> dict[str, int]:
        """How many events :meth:`events` yields per topic (without generating them)."""
        counts = dict.fromkeys(TOPICS, 0)
        for _, _, kind, _, _ in self._schedule:
            topic = {
                "open": "rounds",
                "close": "rounds",
                "stake": "stakes",
                "target": "targets",
            }.get(kind, "submissions")
            counts[topic] += 1
        return counts

    def ids(self, round_number: int) -> list[str]:
        """The universe of a round, in the order of its open message."""
        return self._round_ids(self._index(round_number))

    def predictions(self, round_number: int) -> NDArray[np.float64]:
        """The predictions in force at a round's close, ``[n_models, n_ids]`` (all models,
        including those that skip the round — see :attr:`submitted`)."""
        return self._round_data(self._index(round_number)).predictions

    def targets(self, round_number: int, day: int | None = None) -> NDArray[np.float64]:
        """A round's targets on ``day`` (default: final), NaN for ids not resolved yet."""
        d = self.config.resolution_days if day is None else day
        if not 1 <= d <= self.config.resolution_days:
            raise ValueError(f"day must be in 1..{self.config.resolution_days}, got {d}")
        targets: NDArray[np.float64] = self._round_data(self._index(round_number)).targets[d - 1]
        return targets

    # --- plan --------------------------------------------------------------------------------

    def _rng(self, stream: int, index: int) -> np.random.Generator:
        """One random stream per purpose and round index (rounds before the season: < 0)."""
        if index < 0:
            return np.random.default_rng([self.config.seed, stream + _PAST_STREAMS, -index])
        return np.random.default_rng([self.config.seed, stream, index])

    def _index(self, round_number: int) -> int:
        i = round_number - self.config.start_round
        if not 0 <= i < self.config.n_rounds:
            raise ValueError(f"round {round_number} is not in this season ({self.rounds[0]}..{self.rounds[-1]})")
        return i

    def _id_pool(self) -> list[str]:
        size = max(self.config.n_ids, math.ceil(self.config.n_ids * self.config.id_pool_factor))
        width = max(4, len(str(size)))
        return [f"id{n:0{width}d}" for n in range(1, size + 1)]

    def _draw_models(self, rng: np.random.Generator, gamma: NDArray[np.float64], beta_perp: NDArray[np.float64]) -> _Models:
        cfg = self.config
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
        crowd_direction = _unit_rows(gamma + cfg.crowd_variation * wander)
        skill = rng.uniform(*cfg.originality_range, size=n)
        own = _unit_rows(np.array([_orthogonal(row, beta_perp) for row in rng.standard_normal((n, k_dim))]))
        original_direction = _unit_rows(skill[:, None] * beta_perp + np.sqrt(1 - skill**2)[:, None] * own)
        # Stakes: a small log-normal stake on arrival, grown over the tenure by reinvested
        # payouts; some participants never stake.
        growth = cfg.stake_growth * tenure + cfg.stake_growth_sd * np.sqrt(tenure) * rng.standard_normal(n)
        stake = cfg.stake_median * np.exp(cfg.stake_sigma * rng.standard_normal(n) + growth)
        stakers = rng.random(n) >= cfg.zero_stake_fraction
        stake = np.where(stakers, np.round(np.maximum(stake, 10.0**-cfg.stake_decimals), cfg.stake_decimals), 0.0)
        return _Models(ids, q, k, crowd_direction, original_direction, stake, arrival.astype(np.int64))

    def _plan(self) -> None:
        """Submissions, payouts and the stakes they lead to, round by round; then the calendar.

        Round index ``i`` (``< 0``: played before the season) resolves on the stake evening of
        round ``i + resolution_days + 2``; its payout is reinvested then, and the participants'
        runs of payouts (the last ``run_length`` resolved rounds) decide withdrawals and large
        reinvestments.
        """
        cfg = self.config
        n, rounds = cfg.n_models, cfg.n_rounds
        models = self._models
        lag = cfg.resolution_days + 2
        past = lag - 1 + cfg.run_length  # rounds before the season whose payouts count
        rng = self._rng(_STREAM_PLAN, 0)

        present = np.arange(rounds)[:, None] >= models.arrival[None, :]
        submitted = (rng.random((rounds, n)) >= cfg.skip_fraction) & present
        resubmitted = (rng.random((rounds, n)) < cfg.resubmit_fraction) & submitted
        past_submitted = (rng.random((past, n)) >= cfg.skip_fraction) & (models.arrival == 0)
        staker = models.initial_stake > 0
        incumbent_stake = np.where(models.arrival == 0, models.initial_stake, 0.0)

        # Payouts of every round, indexed by round index + past.
        # Payout scores (what a participant judges its run by) and realised payouts (what its
        # stake grows by) of every round, indexed by round index + past.
        score = np.full((past + rounds, n), np.nan)
        paid = np.full((past + rounds, n), np.nan)
        for i in range(-past, 0):
            score[i + past], paid[i + past] = self._round_payouts(i, past_submitted[i + past], incumbent_stake)

        stakes = np.zeros((rounds, n))
        stake = incumbent_stake.copy()
        jumped = np.zeros(n, dtype=bool)
        jumps: list[StakeJump] = []
        scale = 10.0**cfg.stake_decimals
        for j in range(rounds):
            previous = stake.copy()
            if j > 0:
                # Reinvest the payouts of the round resolving tonight.
                i = j - lag
                if i >= -past:
                    stake = np.round(stake * (1 + np.nan_to_num(paid[i + past])), cfg.stake_decimals)
                # Each participant's run: mean payout over its last `run_length` resolved rounds.
                last = j - lag
                window = score[max(0, last + past - cfg.run_length + 1) : last + past + 1]
                counted = np.isfinite(window).sum(axis=0)
                run = np.where(
                    counted >= max(1, cfg.run_length // 2),
                    np.nansum(window, axis=0) / np.maximum(counted, 1),
                    np.nan,
                )
                draws = rng.random((3, n))
                active = (previous > 0) & present[j]
                # Withdrawals after a losing run.
                losing = active & (run < 0) & (draws[0] < cfg.withdraw_probability)
                share = cfg.withdraw_share[0] + (cfg.withdraw_share[1] - cfg.withdraw_share[0]) * draws[1]
                stake = np.where(losing, np.round(stake * (1 - share), cfg.stake_decimals), stake)
                # Large reinvestments after a good run (once per participant).
                good = active & ~jumped & (run >= cfg.run_threshold) & (draws[2] < cfg.jump_probability) & submitted[j - 1]
                for m in rng.permutation(np.flatnonzero(good)):
                    if len(jumps) >= cfg.n_jumps:
                        break
                    factor = self._jump_factor(rng)
                    after = math.ceil(previous[m] * factor * scale) / scale
                    stake[m] = after
                    jumped[m] = True
                    submitted[j, m] = True
                    jumps.append(StakeJump(self.models[m], self.rounds[j], factor, float(previous[m]), after))
            # Newcomers stake on arrival.
            arriving = (models.arrival == j) & (j > 0) & staker
            stake[arriving] = models.initial_stake[arriving]
            stakes[j] = stake
            resubmitted[j] &= submitted[j]
            if j + lag < rounds:  # resolves in the season: its payout is reinvested
                score[j + past], paid[j + past] = self._round_payouts(j, submitted[j], stake)

        self.arrival = models.arrival
        self.submitted = submitted
        self.resubmitted = resubmitted
        self.stakes = stakes
        self.crowd_share = np.broadcast_to(models.crowd_share, (rounds, n)).copy()
        self.payouts = paid[past:].copy()
        self.payout_scores = score[past:].copy()
        self.jumps = tuple(sorted(jumps, key=lambda e: (e.round, e.model)))
        for array in (
            self.stakes,
            self.crowd_share,
            self.payouts,
            self.payout_scores,
            self.submitted,
            self.resubmitted,
            self.arrival,
        ):
            array.flags.writeable = False
        self._schedule = self._build_schedule()

    def _jump_factor(self, rng: np.random.Generator) -> float:
        """A large reinvestment's stake multiple (:attr:`SimulationConfig.jump_tail`)."""
        low, high = self.config.jump_range
        if self.config.jump_tail <= 0:
            return float(rng.uniform(low, high))
        return float(min(high, low * (1.0 - rng.random()) ** (-1.0 / self.config.jump_tail)))

    def _round_payouts(self, i: int, submitted: NDArray[np.bool_], stake: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Payout score and realised payout per model of round index ``i`` (NaN for models that skip it)."""
        cfg = self.config
        rows = np.flatnonzero(submitted)
        score = np.full(cfg.n_models, np.nan)
        paid = np.full(cfg.n_models, np.nan)
        if rows.size == 0 or not (stake[rows] > 0).any():
            return score, paid
        data = self._round_data(i)
        scores = scoring.score_round(data.predictions[rows], stake[rows], data.targets[-1], round=abs(self.config.start_round + i))
        corr, contribution = np.nan_to_num(scores.corr), np.nan_to_num(scores.contribution)
        multipliers = {"corr_multiplier": cfg.payout_corr_multiplier, "mmc_multiplier": cfg.payout_mmc_multiplier, "clip": cfg.payout_clip}
        score[rows] = scoring.payout_score(corr, contribution, **multipliers)
        # Numerai's payout: clip(payout_factor · (0.5·CORR + 2·MMC), ±0.05), the factor inside the clip.
        paid[rows] = scoring.payout_score(cfg.payout_factor * corr, cfg.payout_factor * contribution, **multipliers)
        return score, paid

    # --- rounds ------------------------------------------------------------------------------

    def _round_ids(self, i: int) -> list[str]:
        rng = self._rng(_STREAM_IDS, i)
        chosen = rng.choice(len(self._pool), size=self.config.n_ids, replace=False)
        return [self._pool[c] for c in chosen]

    def _round_data(self, i: int, first: bool = False) -> _RoundData:
        """Ids, predictions and targets of round index ``i`` (same numbers on every call).

        Predictions depend only on the models' fixed traits and the round's random draws. The
        replaced first submissions are computed only when ``first`` (the event stream)."""
        cfg = self.config
        n_ids, models = cfg.n_ids, self._models
        ids = self._round_ids(i)
        factors = self._rng(_STREAM_FACTORS, i).standard_normal((cfg.n_factors, n_ids))
        signal = self._beta @ factors

        k = models.crowd_share
        q = models.signal_share
        rng = self._rng(_STREAM_PREDICTIONS, i)
        structured = np.sqrt(q * k)[:, None] * (models.crowd_direction @ factors) + np.sqrt(q * (1 - k))[:, None] * (models.original_direction @ factors)
        noise_scale = np.sqrt(1 - q)[:, None]
        latent = structured + noise_scale * rng.standard_normal((cfg.n_models, n_ids))
        first_noise = rng.standard_normal((cfg.n_models, n_ids))
        predictions = np.round(ndtr(latent), cfg.prediction_decimals)
        first_predictions = np.round(ndtr(structured + noise_scale * first_noise), cfg.prediction_decimals) if first else _EMPTY

        rng = self._rng(_STREAM_TARGETS, i)
        rho = cfg.target_signal_corr
        final_latent = rho * signal + math.sqrt(1 - rho**2) * rng.standard_normal(n_ids)
        days = cfg.resolution_days
        # A backward random walk: day d's deviation sums the steps of days d..D−1, so it shrinks
        # day by day to 0 at the final day; day 1's std is `daily_noise`.
        steps = rng.standard_normal((days, n_ids)) * (cfg.daily_noise / math.sqrt(max(days - 1, 1)))
        steps[-1] = 0.0
        deviation = np.cumsum(steps[::-1], axis=0)[::-1]
        targets = np.empty((days, n_ids))
        for d in range(days):
            missing = np.zeros(n_ids, dtype=bool)
            if cfg.early_null_fraction > 0 and d < cfg.early_null_days and d < days - 1:
                share = cfg.early_null_fraction * (cfg.early_null_days - d) / cfg.early_null_days
                missing[rng.permutation(n_ids)[: int(round(share * n_ids))]] = True
            targets[d] = _bucket(final_latent + deviation[d], missing, cfg.target_buckets)
        return _RoundData(ids, predictions, first_predictions, targets)

    # --- calendar ----------------------------------------------------------------------------

    def _day_ms(self, day: float) -> int:
        return self.config.first_day_ms + int(round(day * DAY_MS))

    def _open_ms(self, i: int) -> int:
        return self._day_ms(i + 1) + _OPEN_AT

    def _close_ms(self, i: int) -> int:
        return self._day_ms(i + 1) + _CLOSE_AT

    def _stake_ms(self, i: int) -> int:
        """First stake update for round index ``i`` (the evening before it opens)."""
        return self._day_ms(i) + _STAKES_AT

    def _target_ms(self, i: int, day: int) -> int:
        """Target day ``day`` of round index ``i``: 06:00 of day ``o + 1 + day``, one second per
        round after the earliest resolving that day (rounds in ascending order)."""
        calendar_day = i + 2 + day
        earliest = max(0, calendar_day - 2 - self.config.resolution_days)  # first round resolving then
        return self._day_ms(calendar_day) + _TARGETS_AT + (i - earliest) * _TARGET_SPACING_MS

    def _build_schedule(self) -> list[tuple[int, int, str, int, int]]:
        """Every event as ``(timestamp, topic order, kind, round index, model or day)``, sorted."""
        cfg = self.config
        entries: list[tuple[int, int, str, int, int]] = []
        rounds_order, stakes_order = _TOPIC_ORDER["rounds"], _TOPIC_ORDER["stakes"]
        subs_order, targets_order = _TOPIC_ORDER["submissions"], _TOPIC_ORDER["targets"]
        window = _CLOSE_AT - _OPEN_AT - 2  # submissions strictly between open and close
        for i in range(cfg.n_rounds):
            open_ms = self._open_ms(i)
            entries.append((open_ms, rounds_order, "open", i, 0))
            entries.append((self._close_ms(i), rounds_order, "close", i, 0))
            # Stakes: everyone's at the first round, afterwards only the ones that changed.
            changed = np.flatnonzero(np.ones(cfg.n_models, dtype=bool)) if i == 0 else np.flatnonzero(self.stakes[i] != self.stakes[i - 1])
            for pos, m in enumerate(changed):
                entries.append((self._stake_ms(i) + pos * _STAKE_SPACING_MS, stakes_order, "stake", i, int(m)))
            # Submissions: distinct instants in the window, models in random order; a
            # resubmitter's first version always comes before its final one.
            rng = self._rng(_STREAM_CALENDAR, i)
            who = np.flatnonzero(self.submitted[i])
            twice = np.flatnonzero(self.resubmitted[i])
            total = who.size + twice.size
            instants = np.sort(rng.choice(window, size=total, replace=False)) + open_ms + 1
            kinds = ["submit"] * who.size + ["resubmit_first"] * twice.size
            owners = np.concatenate([who, twice])
            order = rng.permutation(total)
            slot_of = np.empty(total, dtype=np.int64)
            slot_of[order] = np.arange(total)
            position = {int(m): idx for idx, m in enumerate(who)}
            for offset, m in enumerate(twice):
                final_idx, first_idx = position[int(m)], who.size + offset
                if slot_of[first_idx] > slot_of[final_idx]:
                    slot_of[first_idx], slot_of[final_idx] = slot_of[final_idx], slot_of[first_idx]
            for idx in range(total):
                entries.append((int(instants[slot_of[idx]]), subs_order, kinds[idx], i, int(owners[idx])))
            for day in range(1, cfg.resolution_days + 1):
                entries.append((self._target_ms(i, day), targets_order, "target", i, day))
        entries.sort(key=lambda e: (e[0], e[1]))
        return entries


_EMPTY = np.zeros((0, 0))


def simulate(config: SimulationConfig | None = None) -> Iterator[SimEvent]:
    """The event stream of a season (:meth:`Simulation.events` of a fresh :class:`Simulation`)."""
    return Simulation(config or SimulationConfig()).events()


# --------------------------------------------------------------------------- vector math


def _unit(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(x / np.linalg.norm(x), dtype=np.float64)


def _unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float64)


def _orthogonal(x: NDArray[np.float64], direction: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x`` minus its projection on the unit vector ``direction``."""
    return x - (x @ direction) * direction


def _bucket(latent: NDArray[np.float64], missing: NDArray[np.bool_], shares: tuple[float, ...]) -> NDArray[np.float64]:
    """Targets in {0, .25, .5, .75, 1} by rank of ``latent`` among the present ids; NaN if missing.

    The bucket of the id at uniform rank ``u`` is the number of cumulative ``shares`` below
    ``u`` (20/20/20/20/20 by default, Numerai-like quantile buckets).
    """
    out = np.full(latent.size, np.nan)
    present = ~missing
    n = int(present.sum())
    if n == 0:
        return out
    u = (rankdata(latent[present], method="ordinal") - 0.5) / n
    edges = np.cumsum(shares)[:-1]
    out[present] = np.searchsorted(edges, u, side="right") / 4.0
    return out
