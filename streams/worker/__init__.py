"""The worker: the Faust app and its agents, and what it does with each input record.

:class:`~streams.worker.processor.Processor` decodes a record and routes it to its topic's
handler, which checks it against the state, updates Redis and sends the outputs; a refused
record goes to the dead-letter topic with its reason. The handlers are plain async code,
callable without Faust: the agents (:mod:`streams.worker.agents`) and the submissions consumer
(:mod:`streams.worker.ingest`) only move records between Kafka and the processor, through the
runtime (:mod:`streams.worker.runtime`), which ``mmc rebuild`` (:mod:`streams.worker.rebuild`)
uses as well.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``main``               the worker process: the app wired to one runtime, run in the foreground
``app``                the Faust app, built and nothing else
``agents``             an agent per input topic but ``submissions``: records in, offsets marked
``ingest``             the submissions consumer (librdkafka), batches ranked ahead of applying
``runtime``            connections, the processor, applying a batch of records exactly once
``rebuild``            the state rebuilt from the input topics (``mmc rebuild``, start-up recovery)
``processor``          the entry point: decoding, triage, routing, refusals
``rounds``             the ``rounds`` handler: open, close (and starts the close-time work)
``basis_at_close``     a closed round's basis, prepared in the background for its first targets
``close_alerts``       the close-stage ``corr_w_mm_spike`` alerts
``submissions``        the ``submissions`` handler: batches decided and stored, live meta model
                       and live alerts
``stakes``             the ``stakes`` handler
``targets``            the ``targets`` handler: scores, leaderboard, crowding, round alerts
``round_reader``       rounds as stored (:class:`~streams.state.RoundInfo`), universes cached
``round_inputs``       a closed round's rows, frozen stakes, draws and basis, cached
``ranking``            submissions decoded and ranked on the rank threads
``context``            what every handler is handed, and the functions they share
``alerts``             the alert rules (pure)
``metrics``            the worker's Prometheus counters and ``/metrics`` page
``log_throttle``       a log filter that keeps the log readable while Kafka or Redis is down
=====================  ==========================================================================

Lifecycle rules (event time = the Kafka record timestamp; see :mod:`streams.state.progress` for how
decisions wait for the other topics):

- ``open`` stores the universe; opening it again (another record) is refused ``round_exists``.
- ``close`` freezes the round at its event time; a second, different close is refused.
- A submission counts when its event time is at or before its round's close; later → ``round_closed``.
  A newer submission (event time, then offset) replaces an older one; an older one arriving
  after a newer one is refused ``superseded``. Submissions for unknown rounds → ``unknown_round``.
- A stake update applies to every round whose close comes after it (with ``"round": r``: to
  round r and later ones only). Stakes for models that never submitted are kept (they may
  submit later). A stake naming a closed round, made after that close → ``round_closed``.
- Targets for an unknown round → ``unknown_round``; before the round's close → ``round_not_closed``;
  for a round without submissions → ``no_submissions``; with more than 20% of ids missing →
  ``too_many_missing_targets`` (the update is not scored). Each scored update (any day, in any
  order, repeated or not) publishes the scores, the leaderboard rows of the round's models and
  the round's crowding figures; the same inputs give the same bytes. Round-level alerts fire
  once per round, at its first scored update.
- A record whose processing fails for a reason other than the input or the infrastructure is
  refused ``internal_error`` (the worker logs the traceback and carries on). Redis or Kafka
  being unreachable is not the input's fault: the agent retries the record instead.

No topic's handler imports another's; ``processor`` alone imports them all. The modules form
layers and import only downwards: the process; the agents and rebuild; the runtime and the
submissions consumer; the processor; the handlers; the close-time work; the round inputs; the
context; the leaves (alerts, metrics, the app, the log throttle). Contracts in pyproject.toml.
"""
