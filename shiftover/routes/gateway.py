"""The gateway driver interface: what a route move asks of any gateway.

HAProxy (``haproxy.py``, the default) and nginx (``nginx.py``) are the drivers that are run and
supported; Envoy, the Kubernetes Gateway API or Traefik would implement the same four calls. A
driver that can copy live traffic (nginx's ``mirror``) is also a ``MirroringGateway``: the dark
launch then compares mirrored live requests instead of replaying logged ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Split:
    """Where a route's traffic goes now: relative weights of the old and new upstreams."""

    route: str
    old_weight: int
    new_weight: int
    old_present: bool = True  # False once the old upstream is removed from the route

    @property
    def percent_new(self) -> float:
        total = self.old_weight + self.new_weight
        return 100.0 * self.new_weight / total if total else 0.0


class Gateway(Protocol):
    @property
    def url(self) -> str:
        """Where clients reach the gateway (``http://host:port``)."""
        ...

    def set_split(self, route: str, percent_new: float) -> Split:
        """Send ``percent_new`` % of the route's users (by their stable key) to the new upstream
        without failing a request (HAProxy: runtime API; nginx: graceful reload), in effect for
        every request accepted after it returns; returns the split read back from the gateway."""
        ...

    def split(self, route: str) -> Split:
        """The split the running gateway applies now."""
        ...

    def retire_old(self, route: str) -> Split:
        """Remove the old upstream from the route: the gateway answers from the new one only."""
        ...


@runtime_checkable
class MirroringGateway(Protocol):
    def mirror(self, route: str, target: str | None) -> None:
        """Copy the route's safe requests (GET, HEAD) to ``target`` (``host:port``), or stop (None);
        the copies never delay or fail the client's request."""
        ...
