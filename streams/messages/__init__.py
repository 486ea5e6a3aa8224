"""What the service reads and writes on Kafka, as plain data (no Kafka, Redis or clock here).

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``records``            input decoding and validation → typed records, or a reason code (``REASONS``)
``schemas``            the published JSON Schemas (``schemas/*.json``, draft 2020-12) and the
                       validator built on them
``outputs``            output and dead-letter records: deterministic values, the input's event
                       time as timestamp, a dead letter that always fits
``resolution``         the values of the ``scores``, ``leaderboard`` and ``crowding`` messages,
                       from a round's scores (``mmc web`` computes a model's standing with it too)
=====================  ==========================================================================
"""
