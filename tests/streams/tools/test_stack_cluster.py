"""The loopback Redis Cluster: three primaries that form a cluster, serve every slot and stop
clean; ``mmc stack --redis-cluster --env-file F`` writes an env file the service's clients work with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import redis.cluster

from streams.tools.stack import LoopbackRedisCluster
from tests.streams.tools.test_stack import REPO, _read_lines, _wait_gone

#: Run with the env file sourced: the service's own client, from the settings alone.
CLIENT_CHECK = """
import asyncio
from streams.settings import Settings
from streams.state.client import redis_client

async def main():
    settings = Settings()
    client = redis_client(settings)
    await client.set("{t}:probe", "1")
    print(type(client).__name__, len(client.get_primaries()), (await client.get("{t}:probe")).decode())
    await client.aclose()

asyncio.run(main())
"""


def test_loopback_cluster_serves_every_slot_and_stops_clean() -> None:
    """Three primaries, each with a third of the slots, answer a cluster client; stop() ends them."""
    with LoopbackRedisCluster() as cluster:
        pids = cluster.pids
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        try:
            primaries = client.get_primaries()
            assert len(primaries) == 3 and len(pids) == 3
            slots = client.cluster_slots()
            assert sorted(end - start + 1 for start, end in slots) == [5461, 5461, 5462]
            for i in range(50):
                client.set(f"k{i}", i)
            assert len(list(client.scan_iter(count=1000))) == 50  # every primary scanned
        finally:
            client.close()
        assert cluster.startup_seconds < 30
    assert _wait_gone(pids, timeout=10)


def test_mmc_stack_redis_cluster_env_file_works(tmp_path: Path) -> None:
    """``mmc stack --redis-cluster --env-file F``: F exports the broker, a node's URL and
    MMC_REDIS_CLUSTER=true, and the service's client built from them talks to the cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    env.update(TMPDIR=str(tmp_path), MMC_TOPIC_PREFIX=f"cl{uuid.uuid4().hex[:6]}.", MMC_PARTITIONS="2")
    env_file = tmp_path / ".mmc.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "stack", "--redis-cluster", "--no-topics", "--env-file", str(env_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_lines(process, 3, timeout=60)
        assert env_file.read_text() == "".join(f"{line}\n" for line in lines)
        exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert set(exported) == {"MMC_KAFKA_BOOTSTRAP", "MMC_REDIS_URL", "MMC_REDIS_CLUSTER"}
        assert exported["MMC_REDIS_CLUSTER"] == "true"
        shell = subprocess.run(
            ["bash", "-c", '. "$1" && exec "$2" -c "$3"', "bash", str(env_file), sys.executable, CLIENT_CHECK],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert shell.stdout.split() == ["RedisCluster", "3", "1"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "redis cluster pids" in stderr and stderr.rstrip().endswith("stopped"), stderr
    assert not env_file.exists()
