"""What the server's edge shares between connections and requests: the connection limits
(``EdgeLimits``, enforced by ``kdserve.serve.http_protocol``) and the live counts (``EdgeState``:
open and idle connections, requests in flight and reading their bodies, bytes buffered) that
``/metrics`` and ``/ready`` report. No httptools here, so the middleware and the app can import it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from dataclasses import field as dc_field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class EdgeLimits:
    """The per-connection limits enforced before the app sees a request (see ``Settings``)."""

    max_connections: int = 4096
    idle_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    max_url_bytes: int = 8 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> EdgeLimits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class EdgeState:
    """Shared by every connection of one server: open and idle connections (for eviction) and counts
    of what the edge refused or closed, which ``/metrics`` and ``/ready`` report."""

    max_inflight: int = 0
    max_connections: int = 0
    open: int = 0
    inflight: int = 0  # requests holding a slot (body read, being answered)
    reading: int = 0  # requests reading their body (no slot held)
    buffered_bytes: int = 0  # body bytes read by requests not yet admitted
    # connections with no request in progress, oldest first: evicted first when the cap is reached
    idle: OrderedDict[Any, None] = dc_field(default_factory=OrderedDict)
    closed: Counter[str] = dc_field(default_factory=Counter)

    def alone(self) -> bool:
        """At most one connection has a request in progress (open and not idle), and the edge is
        live (in-process ASGI clients, as some tests use, open no connection: never alone)."""
        return self.open > 0 and self.open - len(self.idle) <= 1

    def evict_idle(self) -> bool:
        """Close the longest-idle connection; False when every connection has a request in progress."""
        while self.idle:
            victim, _ = self.idle.popitem(last=False)
            if not victim.transport.is_closing():
                victim.transport.close()
                self.closed["evicted_idle"] += 1
                return True
        return False

    @property
    def saturated(self) -> bool:
        """Every in-flight slot taken, or the connection cap reached with no idle connection to evict."""
        limits_full = self.max_connections > 0 and self.open >= self.max_connections and not self.idle
        return (self.max_inflight > 0 and self.inflight >= self.max_inflight) or limits_full

    def snapshot(self) -> dict[str, Any]:
        return {
            "saturated": self.saturated,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "reading_body": self.reading,
            "connections": self.open,
            "max_connections": self.max_connections,
        }


class EdgeCollector(Collector):
    """``kdserve_connections_open``, ``kdserve_body_reading``, ``kdserve_body_buffered_bytes``,
    ``kdserve_saturated`` and ``kdserve_edge_closed_total{reason}``, read at scrape time."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state

    def collect(self) -> Any:
        s = self.state
        for name, text, value in (
            ("kdserve_connections_open", "Open client connections", s.open),
            ("kdserve_body_reading", "Requests reading their body (holding no in-flight slot)", s.reading),
            ("kdserve_body_buffered_bytes", "Body bytes read by requests not yet admitted", s.buffered_bytes),
            ("kdserve_saturated", "1 while every in-flight slot (or connection) is taken", int(s.saturated)),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        closed = CounterMetricFamily(
            "kdserve_edge_closed", "Connections and requests the edge refused or closed, by reason", labels=["reason"]
        )
        for reason, count in sorted(s.closed.items()):
            closed.add_metric([reason], count)
        yield closed


def register(registry: CollectorRegistry, state: EdgeState) -> None:
    registry.register(EdgeCollector(state))
