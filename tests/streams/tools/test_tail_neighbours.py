"""``mmc tail neighbours``: one compact line per message."""

from __future__ import annotations

import numpy as np

import scoring
from streams.cli.reading import TopicName
from streams.messages.neighbours import neighbour_messages
from streams.tools.tail import TailedMessage, describe


def test_a_neighbours_message_is_one_line_of_its_main_fields() -> None:
    """Time, topic, key, then round, stake, own and crowd share, crowd size and how many neighbours (the model is the key)."""
    assert "neighbours" in TopicName.__members__
    preds = np.array([[1.0, 2, 3, 4, 5], [1, 2, 3, 5, 4], [5, 4, 3, 2, 1]])
    value = neighbour_messages(812, ["a", "b", "c"], scoring.crowd_neighbours(preds, [1.0, 3.0, 0.0], k=2, threshold=0.8))[0]
    message = TailedMessage("mmc.neighbours", 1, 7, 1_767_225_600_000, "a", value, True, ())
    assert describe(message).plain == (
        "2026-01-01 00:00:00 mmc.neighbours a round=812 stake=1 own_share=0.25 crowd_share=0.75 crowd_size=1 neighbours=[1 items]"
    )
