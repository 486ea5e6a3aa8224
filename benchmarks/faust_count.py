"""A Faust worker that only counts submissions — the consumer's own cost, for ``bench_stream.py``.

Same Faust configuration, topic and batching as the real worker (``streams.worker.app.faust_app``,
``input_topic``, ``take_events`` of ``MMC_INGEST_BATCH_SIZE``), but the agent does nothing with
the records. Reads ``MMC_*`` settings and ``MMC_BENCH_COUNT`` (records to count) from the
environment; once counted, prints one line ``COUNTED <records> <per second> <CPU ms per record>`` (Faust logs it)
(rate and CPU from the first batch to the last; CPU = ``time.process_time``, every thread of
this process) and exits at once with status 0 (the count is all the benchmark wants).

Usage (as ``bench_stream.py`` runs it): ``python benchmarks/faust_count.py worker -l warn``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from streams.settings import Settings
from streams.worker.app import faust_app, input_topic

settings = Settings()
app = faust_app(settings)
wanted = int(os.environ["MMC_BENCH_COUNT"])
started: dict[str, float] = {}


@app.agent(input_topic(app, settings, "submissions"), name="count-submissions")
async def count(stream: Any) -> None:
    seen = 0
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_seconds):
        if not started:
            started.update(wall=time.perf_counter(), cpu=time.process_time(), first=len(events))
        seen += len(events)
        if seen >= wanted:
            counted = seen - started["first"]
            wall = time.perf_counter() - started["wall"]
            cpu = time.process_time() - started["cpu"]
            print(f"COUNTED {counted} {counted / wall:.1f} {cpu / counted * 1e3:.3f}", flush=True)
            os._exit(0)


if __name__ == "__main__":
    app.main()
