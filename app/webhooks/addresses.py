"""Where a webhook may go: the address check run at create time and again before each send.

A multi-user service must not let a user make it call its own loopback, the cloud metadata
address or the private network behind it (SSRF), so with authentication on a URL naming or
resolving to such an address is refused. The check of a send resolves the name once and the
request then goes to that very address, so a name cannot resolve to something else in between.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from app.domain.webhooks import UrlRefused, check_url, first_refused, ip_literal

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) -> the IP addresses the host resolves to`; raises OSError when it does not."""


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    """Where to connect: `address` is None when any address the host resolves to is allowed."""

    host: str
    port: int
    address: str | None = None
    refused: str | None = None


async def destination(url: str, resolver: Resolver, *, allow_private: bool) -> Destination:
    """Check `url` (UrlRefused when it is no http(s) URL) and, unless private addresses are
    allowed, resolve its host and say why it is refused or which address to call."""
    host, port = check_url(url)
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UrlRefused(f"not a URL an HTTP client can call: {exc}") from None
    if allow_private:
        return Destination(host, port)
    literal = ip_literal(host)
    if literal is None and (host == "localhost" or host.endswith(".localhost")):
        return Destination(host, port, refused=f"{host} is a loopback name")
    try:
        addresses = [literal] if literal is not None else await resolver(host, port)
    except UnicodeError:
        raise UrlRefused(f"{host!r} is not a valid host name") from None
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    reason = first_refused(addresses)
    if reason is not None:
        via = "" if literal is not None else f"{host} resolves to "
        return Destination(host, port, refused=f"{via}{reason}")
    return Destination(host, port, address=addresses[0])
