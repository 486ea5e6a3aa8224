"""Where a partition's log ends, as the high watermark of a fetch response reports it.

The embedded broker (Tansu) answers ListOffsets(latest) with the last record batch's base
offset + 1, not the high watermark, so the end a consumer finds with ``seek_to_end`` (or
``end_offsets``) can lie inside the last batch: a reader that starts there replays part of
that batch. The high watermark of the first fetch response for a partition is right: records
below it were in the log before the reader started. On Kafka the two agree and nothing is
skipped.

:class:`HighWatermarks` is the one place that knows this. ``mmc tail`` uses it for where a
tail from the end starts and where ``--until-end`` stops; ``mmc web``'s live feed for where
following the output topics starts.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


class HighWatermarks:
    """Each partition's high watermark as the first fetch response that reports one gives it.

    A mark is unknown (None) until the consumer has had a fetch response for its partition;
    :meth:`observe` after every poll takes the marks that arrived, before the poll's records
    are looked at. Partitions not named at construction have no mark.
    """

    def __init__(self, partitions: Iterable[TopicPartition] = ()) -> None:
        self._marks: dict[TopicPartition, int | None] = dict.fromkeys(partitions)

    def observe(self, consumer: AIOKafkaConsumer) -> bool:
        """Take the high watermark of each partition still without a mark from the consumer's
        latest fetch responses; True when this completed the marks (once)."""
        learned = False
        for tp, mark in self._marks.items():
            if mark is None:
                self._marks[tp] = consumer.highwater(tp)
                learned = learned or self._marks[tp] is not None
        return learned and self.complete

    @property
    def complete(self) -> bool:
        """Whether every partition has its mark."""
        return all(mark is not None for mark in self._marks.values())

    @property
    def empty(self) -> bool:
        """Whether no partition is left (see :meth:`drop`)."""
        return not self._marks

    def before(self, tp: TopicPartition, offset: int) -> bool:
        """Whether the record at ``offset`` was in the log before the mark (False while it is unknown)."""
        mark = self._marks.get(tp)
        return mark is not None and offset < mark

    def reached(self, tp: TopicPartition, offset: int) -> bool:
        """Whether ``offset`` is at or past the mark (False while it is unknown)."""
        mark = self._marks.get(tp)
        return mark is not None and offset >= mark

    def known(self) -> list[tuple[TopicPartition, int]]:
        """The partitions whose mark is known, with it."""
        return [(tp, mark) for tp, mark in self._marks.items() if mark is not None]

    def drop(self, tp: TopicPartition) -> None:
        """Forget a partition (its reader is done with it)."""
        del self._marks[tp]
