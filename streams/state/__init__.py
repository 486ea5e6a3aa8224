"""The service's state in Redis, and the barriers that order decisions across input topics.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``keys``               every Redis key (the only module that knows them) and the key layout
``store``              :class:`RedisState`: idempotent writes and reads, the state's epoch, progress
``results``            the published results kept for readers (scores, histories, leaderboard,
                       trend, alerts): part of :class:`RedisState`
``neighbours``         who crowds each model, kept for readers (neighbours messages, crowding tax):
                       part of :class:`RedisState`
``retention``          what is kept of past rounds, and when the rest goes
``round_info``         a round's lifecycle as stored (:class:`RoundInfo`), every field checked
``rows``               a stored submission row and stake update, and their encodings
``scripts``            the Lua scripts the store runs on the server
``encoding``           Redis replies as text or bytes, float64 arrays as bytes
``client``             the Redis client the settings describe
``progress``           barriers between input topics, catching up from Kafka itself
=====================  ==========================================================================
"""

from __future__ import annotations

from streams.state.keys import ROWS_PRUNED, SCORES_PRUNED, Keys, key_family
from streams.state.results import ALERTS_KEPT
from streams.state.retention import RetentionPolicy, RetentionReport, shadowed_stakes
from streams.state.round_info import RoundInfo
from streams.state.rows import StakeEntry, SubmissionRow
from streams.state.store import RedisState

__all__ = [
    "ALERTS_KEPT",
    "ROWS_PRUNED",
    "SCORES_PRUNED",
    "Keys",
    "RedisState",
    "RetentionPolicy",
    "RetentionReport",
    "RoundInfo",
    "StakeEntry",
    "SubmissionRow",
    "key_family",
    "shadowed_stakes",
]
