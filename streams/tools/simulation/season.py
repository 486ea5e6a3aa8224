"""A planned season: its ground truth and its event stream."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streams.tools.simulation.calendar import TOPICS, SimEvent, build_schedule
from streams.tools.simulation.config import STREAM_MODELS, SimulationConfig, stream_rng
from streams.tools.simulation.population import StakeJump, draw_models, orthogonal, plan_season, unit
from streams.tools.simulation.rounds import EMPTY, RoundData, Rounds, id_pool


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
        rng = stream_rng(cfg, STREAM_MODELS, 0)
        k_dim = cfg.n_factors
        beta = unit(rng.standard_normal(k_dim))
        gamma = unit(cfg.crowd_signal_corr * beta + math.sqrt(1 - cfg.crowd_signal_corr**2) * unit(orthogonal(rng.standard_normal(k_dim), beta)))
        beta_perp = unit(orthogonal(beta, gamma))  # the part of the signal the crowd misses
        models = draw_models(cfg, rng, gamma, beta_perp)
        self._rounds = Rounds(cfg, beta, id_pool(cfg), models)
        self.models = models.ids
        self.rounds = tuple(range(cfg.start_round, cfg.start_round + cfg.n_rounds))
        plan = plan_season(models, self._rounds, self.rounds)
        self.arrival = models.arrival
        self.submitted = plan.submitted
        self.resubmitted = plan.resubmitted
        self.stakes = plan.stakes
        self.crowd_share = np.broadcast_to(models.crowd_share, (cfg.n_rounds, cfg.n_models)).copy()
        self.payouts = plan.payouts
        self.payout_scores = plan.payout_scores
        self.jumps = plan.jumps
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
        self._schedule = build_schedule(cfg, self.stakes, self.submitted, self.resubmitted)

    # --- public API --------------------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        """Every input message of the season, in non-decreasing timestamp order."""
        cfg = self.config
        cache: dict[int, RoundData] = {}
        last_day = {i: cfg.resolution_days for i in range(cfg.n_rounds)}
        for entry in self._schedule:
            ts, _, kind, i, extra = entry
            r = self.rounds[i]
            if i not in cache:
                cache[i] = self._rounds.data(i, first=True)
            data = cache[i]
            if kind == "open":
                yield SimEvent("rounds", str(r), ts, {"type": "open", "round": r, "ids": list(data.ids)})
            elif kind == "close":
                yield SimEvent("rounds", str(r), ts, {"type": "close", "round": r})
                # Only the targets are needed from now on: drop the predictions.
                cache[i] = RoundData(data.ids, EMPTY, EMPTY, data.targets)
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
        return self._rounds.ids(self._index(round_number))

    def predictions(self, round_number: int) -> NDArray[np.float64]:
        """The predictions in force at a round's close, ``[n_models, n_ids]`` (all models,
        including those that skip the round — see :attr:`submitted`)."""
        return self._rounds.data(self._index(round_number)).predictions

    def targets(self, round_number: int, day: int | None = None) -> NDArray[np.float64]:
        """A round's targets on ``day`` (default: final), NaN for ids not resolved yet."""
        d = self.config.resolution_days if day is None else day
        if not 1 <= d <= self.config.resolution_days:
            raise ValueError(f"day must be in 1..{self.config.resolution_days}, got {d}")
        targets: NDArray[np.float64] = self._rounds.data(self._index(round_number)).targets[d - 1]
        return targets

    def _index(self, round_number: int) -> int:
        i = round_number - self.config.start_round
        if not 0 <= i < self.config.n_rounds:
            raise ValueError(f"round {round_number} is not in this season ({self.rounds[0]}..{self.rounds[-1]})")
        return i


def simulate(config: SimulationConfig | None = None) -> Iterator[SimEvent]:
    """The event stream of a season (:meth:`Simulation.events` of a fresh :class:`Simulation`)."""
    return Simulation(config or SimulationConfig()).events()
