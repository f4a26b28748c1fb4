"""From ``AGENTMESH_REDIS_URL`` to a redis-py client: a single server, Sentinel or Cluster.

- ``redis://`` / ``rediss://`` / ``unix://``: one server (:meth:`redis.asyncio.Redis.from_url`).
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` (``rediss+sentinel``
  for TLS to the primary): the primary of ``service`` as the sentinels name it, followed
  through failovers by redis-py's own :class:`~redis.asyncio.sentinel.Sentinel` (each new
  connection asks the sentinels where the primary is now). The credentials are the primary's;
  ``?sentinel_password=...`` authenticates to the sentinels too.
- ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster`` for TLS): a
  Redis Cluster through :class:`~redis.asyncio.cluster.RedisCluster`, the hosts being startup
  nodes (the rest are discovered).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.sentinel import Sentinel

from agentmesh.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SETTING = "AGENTMESH_REDIS_URL"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL names: its kind, the hosts to ask first and how to log in."""

    kind: str  # "single", "sentinel" or "cluster"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The target for logs, without credentials."""
        if self.kind == "single":
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"{self.kind} {hosts}" + (f" service {self.service}" if self.service else "")


def _hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{_SETTING}: {item!r} is not host:port (e.g. 10.0.0.5:26379); give the"
                " sentinels or cluster nodes as host:port,host:port"
            )
        hosts.append((host, int(port)))
    return tuple(hosts)


def parse(url: str) -> RedisTarget:
    """What ``url`` names; ConfigError naming the setting when it is malformed."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        return RedisTarget("single", url)
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    username, _, password = credentials.partition(":")
    query = parse_qs(parts.query)
    common: dict[str, Any] = {
        "url": url,
        "hosts": _hosts(parts.netloc),
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "tls": scheme.startswith("rediss"),
    }
    if scheme in CLUSTER_SCHEMES:
        if parts.path.strip("/"):
            raise ConfigError(f"{_SETTING}: a Redis Cluster has only database 0; drop the path")
        return RedisTarget("cluster", **common)
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ConfigError(
            f"{_SETTING}: name the sentinels' service, e.g. redis+sentinel://host:26379/mymaster"
        )
    if db and not db.isdigit():
        raise ConfigError(f"{_SETTING}: database {db!r} is not a number")
    return RedisTarget(
        "sentinel",
        service=unquote(service),
        db=int(db or 0),
        sentinel_password=next(iter(query.get("sentinel_password", [])), None),
        **common,
    )


class _Cluster(RedisCluster):
    """A cluster client whose pub/sub connection goes to one node of the cluster.

    Classic PUBLISH reaches the subscribers of every node, so one node will do; redis-py
    otherwise picks the node by the first channel's slot, and fails to connect a pub/sub
    opened before any channel is subscribed (as the cache opens it).
    """

    def pubsub(
        self,
        node: ClusterNode | None = None,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:
        if node is None and host is None and port is None:
            node = self.get_random_node()
        return super().pubsub(node=node, host=host, port=port, **kwargs)


def connect(target: RedisTarget, **options: Any) -> Redis:
    """A client of ``target``, with ``options`` (timeouts, retry, decode_responses) for every
    connection it makes.

    A Cluster client is returned as a :class:`Redis`: the cache uses only commands both
    share (single-key reads and writes, publish, pub/sub, scan, one-key pipelines).
    """
    if target.kind == "single":
        return Redis.from_url(target.url, **options)
    login: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        client = _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            ssl=target.tls,
            **login,
            **options,
        )
        return cast(Redis, client)
    timeouts = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    # Typed from redis-py 8.2 on; untyped before (the project allows redis>=5).
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(target.hosts),
        sentinel_kwargs={**timeouts, "password": target.sentinel_password},
        **timeouts,
    )
    primary: Redis = sentinel.master_for(
        target.service, redis_class=Redis, db=target.db, ssl=target.tls, **login, **options
    )
    return primary
