"""Every knob of a simulated season, and the independent random streams its seed gives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: 2026-01-01T00:00:00Z — the default first simulated day.
DEFAULT_FIRST_DAY_MS = 1_767_225_600_000

# Independent random streams, one per purpose: ``default_rng([seed, stream, round])``.
STREAM_MODELS = 0
STREAM_FACTORS = 1
STREAM_PREDICTIONS = 2
STREAM_TARGETS = 3
STREAM_CALENDAR = 4
STREAM_PLAN = 5
STREAM_IDS = 6
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
        resolution_days: days until a round's targets are final (its last update, ``final``);
            a payout is reinvested two days after it.
        target_every_days: a round's targets are sent every this many days, and on its final
            day (1: daily, as the tournament; more: fewer updates to score, same payouts).
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
        jump_to_peer: 0: the multiple is drawn from ``jump_range``. Above 0: the participant
            lifts its stake to this multiple of the stake-weighted mean stake (``Σs²/Σs``, the
            stake behind a typical staked NMR: what an established participant stakes), spread
            by a log-normal factor of σ ``jump_peer_sigma`` and at most ``jump_range[1]``× its
            stake. A participant already staked at that level makes none; a lift below
            ``jump_range[0]``× is an ordinary reinvestment, not an event of the study.
        jump_peer_sigma: the spread of that level between participants.
        inflow_rate: new money joining the tournament each stake evening, as a share of the
            total stake (0: none).
        inflow_exponent: the new money goes to the stakers in proportion to ``stake **
            inflow_exponent`` (1: pro rata; above 1 the larger stakers attract more of it).
        inflow_saturation: 0: that pull holds at every size. Above 0 it saturates at this share
            of the total stake, ``stake · min(stake, inflow_saturation · total) **
            (inflow_exponent − 1)``: a stake among the tournament's most visible draws new money
            pro rata, so the leaders grow together instead of one running away with it.
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
    target_every_days: int = 1
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
    jump_to_peer: float = 0.0
    jump_peer_sigma: float = 0.25
    inflow_rate: float = 0.0
    inflow_exponent: float = 1.0
    inflow_saturation: float = 0.0
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
            "target_every_days >= 1": self.target_every_days >= 1,
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
            "jump_to_peer >= 0": self.jump_to_peer >= 0,
            "jump_peer_sigma >= 0": self.jump_peer_sigma >= 0,
            "inflow_rate >= 0": self.inflow_rate >= 0,
            "inflow_exponent >= 0": self.inflow_exponent >= 0,
            "0 <= inflow_saturation <= 1": 0 <= self.inflow_saturation <= 1,
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


def stream_rng(config: SimulationConfig, stream: int, index: int) -> np.random.Generator:
    """One random stream per purpose and round index (rounds before the season: < 0)."""
    if index < 0:
        return np.random.default_rng([config.seed, stream + _PAST_STREAMS, -index])
    return np.random.default_rng([config.seed, stream, index])
