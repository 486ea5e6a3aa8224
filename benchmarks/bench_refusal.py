"""How fast a worker refuses junk, per input topic, side by side in one run.

One real worker process on the embedded broker and Redis (as ``bench_stream.py``). For each
input topic, ``--records`` undecodable records (``{not json``, keyed) are produced at once
into a fresh set of topics, and the time from the first being applied to the last (the
worker's progress in Redis) gives the refusal rate. A valid ``targets`` update sent right
after the junk on ``targets`` shows what the junk costs resolution: the time until it is
scored. Printed: records refused per second on each topic, and the ratio to ``submissions``.

Usage: ``python benchmarks/bench_refusal.py [--records 5000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_stream import bench_settings, produce, start_worker, stop_worker, wait_applied  # noqa: E402
from streams.kafka.topics import create_topics  # noqa: E402
from streams.tools.stack import EmbeddedStack  # noqa: E402

T0 = 1_767_225_600_000
KEYS = {"rounds": b"1", "targets": b"1", "stakes": b"m1", "submissions": b"m1"}


def refusal_rate(stack: EmbeddedStack, topic: str, n: int, log_dir: Path) -> tuple[float, float | None]:
    """(records refused per second on ``topic``, seconds from the last junk record applied to a
    valid targets update applied — for ``targets`` only)."""
    settings = bench_settings(stack)
    asyncio.run(create_topics(settings))
    with open(log_dir / f"worker-{topic}.log", "ab") as log:
        worker = start_worker(settings, log)
        try:
            # a round to score, so that the valid update after the junk has something to do
            ids = [f"i{i}" for i in range(200)]
            setup = [
                ("rounds", b"1", orjson.dumps({"type": "open", "round": 1, "ids": ids}), T0),
                ("submissions", b"m1", orjson.dumps({"round": 1, "model": "m1", "predictions": [i / 200 for i in range(200)]}), T0 + 1),
                ("stakes", b"m1", orjson.dumps({"model": "m1", "stake": 10.0}), T0 + 2),
                ("rounds", b"1", orjson.dumps({"type": "close", "round": 1}), T0 + 3),
            ]
            asyncio.run(produce(settings, setup))
            wait_applied(settings, "rounds", 2, 120, worker)
            junk = [(topic, KEYS[topic], b"{not json", T0 + 10 + i) for i in range(n)]
            asyncio.run(produce(settings, junk))
            first, last = wait_applied(settings, topic, n + (2 if topic == "rounds" else 1 if topic in ("submissions", "stakes") else 0), 600, worker)
            rate = n / max(last - first, 1e-9)
            after = None
            if topic == "targets":
                update = orjson.dumps({"round": 1, "day": 1, "final": True, "targets": [(i % 5) / 4 for i in range(200)]})
                asyncio.run(produce(settings, [("targets", b"1", update, T0 + 10 + n)]))
                _, done = wait_applied(settings, "targets", n + 1, 120, worker)
                after = done - last
            return rate, after
        finally:
            stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="junk records per topic")
    args = parser.parse_args()
    log_dir = Path(os.environ.get("MMC_BENCH_LOG_DIR", tempfile.mkdtemp(prefix="bench-refusal-")))
    with EmbeddedStack() as stack:
        results = {topic: refusal_rate(stack, topic, args.records, log_dir) for topic in ("submissions", "stakes", "rounds", "targets")}
    base = results["submissions"][0]
    print(f"junk records refused per second, {args.records:,} per topic, one worker (logs: {log_dir})")
    for topic, (rate, after) in results.items():
        extra = f"; a valid update behind them applied {after:.2f} s after the last" if after is not None else ""
        print(f"  {topic:<12} {rate:>9,.0f}/s  ({rate / base:.2f}x submissions){extra}")


if __name__ == "__main__":
    main()
