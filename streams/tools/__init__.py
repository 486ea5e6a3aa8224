"""The tools around the service: they read and write its topics and state as any client would, never the worker's internals.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``stack``              the embedded broker (Tansu) and ``redis-server`` on free ports: ``mmc stack``
``simulation``         the tournament simulator, fully determined by its seed
``replay``             event files (JSON Lines) and their replay onto the input topics
``tail``               a topic read as a subscriber reads it: ``mmc tail``
``report``             the crowding report from the ``scores`` and ``alerts`` topics
``whatif``             a model's recent scores re-scored at another stake: ``mmc whatif``
``demo``               ``mmc demo``: the stack, a worker, a season streamed live, the report
=====================  ==========================================================================
"""
