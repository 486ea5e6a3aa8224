"""Redis keys: the only module that knows them.

Layout (``ns`` = ``MMC_STATE_NAMESPACE``; every key of one round shares the hash tag ``{rN}``
and every key of one model ``{m:NAME}``, so the layout works on Redis Cluster):

=================================  =========================================================
``ns:{r812}:round``                hash: n_ids, open/close timestamps and offsets, alerted flag
``ns:{r812}:ids``                  the universe, as a JSON list
``ns:{r812}:subs``                 hash model → submission row (event time, offset, prepared ranks)
``ns:{r812}:live:P``               running stake-weighted meta model of partition P's submissions
``ns:{r812}:basis``                hash: the round's :class:`scoring.RoundBasis` + its fingerprint
``ns:{r812}:targets``              hash: the latest scored targets (float64, NaN = missing), day, final
``ns:{r812}:scores``               hash model → latest published score message
``ns:{r812}:crowding``             latest crowding message of the round
``ns:{r812}:closecwmm``            hash model → CWMM at close (what the close-stage alerts measured)
``ns:{m:NAME}:stakes``             sorted set of stake updates, scored by event time
``ns:{m:NAME}:history``            hash round → the model's latest scores in that round
``ns:{m:NAME}:neighbours``         hash round → the model's neighbours message of that round
``ns:{m:NAME}:crowdtax``           hash round → the model's crowding tax in that final round
``ns:rounds``                      sorted set of known rounds
``ns:stakes:version``              count of stored stake updates (cache validation)
``ns:models``                      set of models that have submitted
``ns:leaderboard``                 sorted set model → rolling mean payout score
``ns:leaderboard:rows``            hash model → latest leaderboard message
``ns:trend``                       hash round → that round's crowding figures
``ns:finals``                      hash round → time of its first final update and the MMC by CWMM decile then
``ns:alerts``                      sorted set of the latest alerts, scored by event time (capped)
``ns:{progress}:TOPIC``            hash partition → next offset processed (for barriers)
``ns:{progress}:watermark``        hash topic → highest event time processed
``ns:retention``                   hash: the retention policy in force and how far it has acted
=================================  =========================================================
"""

from __future__ import annotations

import re

#: Fields of a round's hash that mark its bulk (rows, live sums, basis, targets) and its scores
#: and crowding as deleted by retention.
ROWS_PRUNED = "rows_pruned"
SCORES_PRUNED = "scores_pruned"

_ROUND_TAG = re.compile(r"\{r\d+\}")
_MODEL_TAG = re.compile(r"\{m:[^}]*\}")
_PARTITION = re.compile(r":live:\d+$")


def key_family(namespace: str, key: str) -> str:
    """A key's family: the key without the namespace, its round (``{rN}``), model
    (``{m:NAME}``) and partition numbers (``:live:P``) — one line per kind of key."""
    name = key[len(namespace) + 1 :] if key.startswith(f"{namespace}:") else key
    return _PARTITION.sub(":live:P", _MODEL_TAG.sub("{m:NAME}", _ROUND_TAG.sub("{rN}", name)))


class Keys:
    """Builds every Redis key (no f-string keys anywhere else)."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def everything(self) -> str:
        """SCAN pattern of every key of the namespace."""
        return f"{self.ns}:*"

    def round(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:round"

    def ids(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:ids"

    def subs(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:subs"

    def live(self, r: int, partition: int) -> str:
        return f"{self.ns}:{{r{r}}}:live:{partition}"

    def basis(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:basis"

    def targets(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:targets"

    def scores(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:scores"

    def crowding(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:crowding"

    def close_cwmm(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:closecwmm"

    def stakes(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:stakes"

    def history(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:history"

    def neighbours(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:neighbours"

    def crowd_tax(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:crowdtax"

    def rounds(self) -> str:
        return f"{self.ns}:rounds"

    def stakes_version(self) -> str:
        return f"{self.ns}:stakes:version"

    def models(self) -> str:
        return f"{self.ns}:models"

    def leaderboard(self) -> str:
        return f"{self.ns}:leaderboard"

    def leaderboard_rows(self) -> str:
        return f"{self.ns}:leaderboard:rows"

    def trend(self) -> str:
        return f"{self.ns}:trend"

    def finals(self) -> str:
        return f"{self.ns}:finals"

    def alerts(self) -> str:
        return f"{self.ns}:alerts"

    def retention(self) -> str:
        return f"{self.ns}:retention"

    def stakes_pattern(self) -> str:
        """SCAN pattern of every model's stake updates."""
        return f"{self.ns}:{{m:*}}:stakes"

    # Progress and watermarks share one hash tag: the script that advances both stays in one slot.
    def progress(self, topic: str) -> str:
        return f"{self.ns}:{{progress}}:{topic}"

    def watermark(self) -> str:
        return f"{self.ns}:{{progress}}:watermark"

    def epoch(self) -> str:
        """A random token written when the state is created or rebuilt: if it changes or
        vanishes under a running worker, Redis lost the state (flushed, restarted empty)."""
        return f"{self.ns}:{{progress}}:epoch"

    def recovery_lock(self) -> str:
        return f"{self.ns}:{{progress}}:recovery"
