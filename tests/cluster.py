"""A real local Redis Cluster for the tests: several ``redis-server`` nodes in cluster mode.

Each node is a :class:`~tests.services.RedisServer` on a free loopback port, in its own
directory, with ``--cluster-enabled yes`` and an explicit cluster bus port (the default, port +
10000, may be out of range or taken on a shared machine). The nodes are joined with
``redis-cli --cluster create`` exactly as an operator would, then we wait until every node says
``cluster_state:ok`` and agrees on the slot map, and (with replicas) until each replica has
synchronised with its master, so a failover test starts from a healthy cluster. Every node is
stopped by its PID. At the end, helpers that wait on worker processes (shared with the
scale-out tests): they fail at once, with the log, when a worker dies unexpectedly.

Usage::

    cluster = LocalCluster(tmp_path, masters=3, replicas=0).start()
    url = cluster.url                      # redis+cluster://127.0.0.1:<port>/0 (for TELEMETRY_REDIS_URL)
    client = cluster.client()              # a redis-py RedisCluster
    node = cluster.node_of("telemetry:{3}")   # the master serving that key's slot
    cluster.failover(cluster.replica_of(node))  # CLUSTER FAILOVER on the replica, waits until done
    cluster.replicated(node); cluster.crash(node)  # SIGKILL a master, wait for its replica's election
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import redis
from redis.cluster import RedisCluster

from producers.keys import stream_key
from tests.chaos_harness import PREFIX, WorkerProcess, wait_for
from tests.services import RedisServer, free_port

SLOTS: Final = 16384
DEFAULT_NODE_TIMEOUT_MS: Final = 3000
READY_TIMEOUT_S: Final = 60.0


def key_slot(key: str) -> int:
    """The cluster slot of ``key`` (CRC16 of its hash tag), computed like every cluster client."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode()))


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if predicate():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {timeout_s}s")


def _info(server: RedisServer, section: str) -> dict[str, str]:
    with contextlib.closing(server.client(socket_timeout=2.0, socket_connect_timeout=2.0)) as client:
        info = client.info(section)
    return {str(name): str(value) for name, value in info.items()}


def _cluster_info(server: RedisServer) -> dict[str, str]:
    with contextlib.closing(server.client(socket_timeout=2.0, socket_connect_timeout=2.0)) as client:
        raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


class LocalCluster:
    """``masters`` master nodes, each with ``replicas`` replicas, on loopback; stopped by PID."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS, appendonly: bool = False) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.directory = Path(directory)
        self.masters_wanted = masters
        self.replicas_per_master = replicas
        self.nodes: list[RedisServer] = []
        for index in range(masters * (1 + replicas)):
            node_dir = self.directory / f"node{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(node_dir, appendonly=appendonly, extra_args=(
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-port", str(free_port()),
            )))
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start every node, join them into one cluster, wait until it is healthy."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            result = subprocess.run(
                [self.cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
                capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
                raise RuntimeError(f"redis-cli --cluster create failed ({result.returncode}):\n"
                                   f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every live node reports ``cluster_state:ok``, all slots, the same epoch; replicas synced."""
        live = [node for node in self.nodes if node.is_running()]

        def healthy() -> bool:
            infos = [_cluster_info(node) for node in live]
            if any(i.get("cluster_state") != "ok" or i.get("cluster_slots_ok") != str(SLOTS) for i in infos):
                return False
            if len({i.get("cluster_current_epoch") for i in infos}) != 1:
                return False
            replicas = [node for node in live if _info(node, "replication").get("role") == "slave"]
            return all(_info(node, "replication").get("master_link_status") == "up" for node in replicas)

        _wait(healthy, "the cluster to become healthy", timeout_s)

    def stop(self) -> None:
        """Kill every node by its PID (nothing is persisted between tests)."""
        for node in self.nodes:
            node.kill()

    # -- addresses and clients ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first live node (any node bootstraps a cluster client)."""
        node = next(node for node in self.nodes if node.is_running())
        return f"redis+cluster://127.0.0.1:{node.port}/0"

    def client(self, **kwargs: Any) -> RedisCluster:
        """A redis-py cluster client (bootstraps from every node, so one dead node is fine)."""
        from redis.cluster import ClusterNode

        startup = [ClusterNode("127.0.0.1", node.port) for node in self.nodes if node.is_running()]
        return RedisCluster(startup_nodes=startup, **kwargs)

    def by_port(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def role(self, node: RedisServer) -> str:
        """``master`` or ``slave`` as the node itself reports it."""
        return _info(node, "replication").get("role", "")

    def masters(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.is_running() and self.role(node) == "master"]

    def slot_owner(self, slot: int) -> RedisServer:
        """The master serving ``slot``, as the cluster (asked through a live node) says."""
        live = next(node for node in self.nodes if node.is_running())
        with contextlib.closing(live.client(socket_timeout=2.0)) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return self.by_port(int(master[1]))
        raise LookupError(f"slot {slot} is not served")

    def node_of(self, key: str) -> RedisServer:
        """The master serving ``key``."""
        return self.slot_owner(key_slot(key))

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A live replica replicating from ``master``."""
        for node in self.nodes:
            if node is master or not node.is_running():
                continue
            info = _info(node, "replication")
            if info.get("role") == "slave" and info.get("master_port") == str(master.port):
                return node
        raise LookupError(f"no replica of 127.0.0.1:{master.port}")

    def failover(self, replica: RedisServer, timeout_s: float = 30.0) -> None:
        """``CLUSTER FAILOVER`` on ``replica`` (a coordinated manual failover); waits until it is
        master, its old master is its replica and the whole cluster agrees again."""
        old_master_port = _info(replica, "replication").get("master_port")
        with contextlib.closing(replica.client(socket_timeout=5.0)) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        _wait(lambda: self.role(replica) == "master", "the replica to become master", timeout_s)
        if old_master_port:
            old = self.by_port(int(old_master_port))
            if old.is_running():
                _wait(lambda: _info(old, "replication").get("master_port") == str(replica.port),
                      "the old master to follow the new one", timeout_s)
        self.wait_healthy(timeout_s)

    def replicated(self, master: RedisServer, timeout_s: float = 30.0) -> None:
        """Wait until ``master``'s replica has received everything ``master`` had written when this
        was called (writes after it may still be lost by a crash: replication is asynchronous)."""
        target = int(_info(master, "replication")["master_repl_offset"])
        replica = self.replica_of(master)
        _wait(lambda: int(_info(replica, "replication").get("slave_repl_offset", "-1")) >= target,
              "the replica to catch up", timeout_s)

    def crash(self, master: RedisServer, timeout_s: float = 60.0) -> RedisServer:
        """SIGKILL ``master``; wait until the cluster elects its replica (after the node timeout)
        and is healthy again without it; returns the new master."""
        replica = self.replica_of(master)
        master.kill()
        _wait(lambda: self.role(replica) == "master", "the replica to be elected master", timeout_s)
        self.wait_healthy(timeout_s)
        return replica


# --- waiting on worker processes (shared by the cluster and scale-out tests) -------------------


def wait_running(predicate: Callable[[], bool], what: str, workers: Iterable[WorkerProcess],
                 timeout_s: float = 60.0) -> None:
    """Wait for ``predicate``; fail at once, with the worker's log, when one of ``workers`` exits
    (a crashed worker would otherwise show up only as a timeout)."""

    def check() -> bool:
        for worker in workers:
            if not worker.alive():
                raise AssertionError(f"worker {worker.pid} exited while waiting for {what}:\n"
                                     f"{worker.log_tail()}")
        return predicate()

    wait_for(check, what, timeout_s)


def caught_up(client: Any, shards: int, *, prefix: str = PREFIX, group: str = "aggregator") -> bool:
    """Every shard's group has been delivered its stream's last entry and acknowledged all: every
    entry is covered by a checkpoint (acknowledgement happens only in the checkpoint script)."""
    for shard in range(shards):
        stream = stream_key(prefix, shard)
        last = client.xinfo_stream(stream)["last-generated-id"]
        groups = client.xinfo_groups(stream)
        mine = next((g for g in groups if g["name"] in (group, group.encode())), None)
        if mine is None or mine["pending"] or mine["last-delivered-id"] != last:
            return False
    return True


def wait_caught_up(client: Any, shards: int, workers: Iterable[WorkerProcess], timeout_s: float = 60.0,
                   *, prefix: str = PREFIX) -> None:
    """:func:`caught_up`, waited for while ``workers`` keep running."""
    wait_running(lambda: caught_up(client, shards, prefix=prefix), "every shard read and acknowledged",
                 workers, timeout_s)
