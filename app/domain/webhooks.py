"""Webhooks in the Standard Webhooks format: event types, secrets, signatures, retry waits and
which addresses a webhook may reach.

A receiver verifies a delivery with any Standard Webhooks library: the secret is `whsec_` + the
base64 of random bytes, the HMAC-SHA256 key is those bytes, and the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`. Each attempt is signed anew with its own timestamp;
the `webhook-id` stays the same, so a receiver deduplicates by it. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from enum import StrEnum
from urllib.parse import urlsplit

from app.domain.errors import DomainError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
MAX_BACKOFF_SECONDS = 3600.0


class EventType(StrEnum):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_STAGE_DONE = "job.stage_done"
    PIPELINE_TICK_MISSED = "pipeline.tick_missed"


_BY_TARGET = {
    "Succeeded": EventType.JOB_SUCCEEDED,
    "Failed": EventType.JOB_FAILED,
    "Cancelled": EventType.JOB_CANCELLED,
}


def event_type_of(event: str, to_status: str) -> EventType | None:
    """The webhook event a job transition reports, if any (most report nothing)."""
    if to_status in _BY_TARGET:
        return _BY_TARGET[to_status]
    if event == "stage_done":
        return EventType.JOB_STAGE_DONE
    return None


class WebhookNotFound(DomainError):
    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id} not found")
        self.webhook_id = webhook_id


class UrlRefused(DomainError):
    """A webhook URL that may not be called (its scheme, or an address it names or resolves to)."""


# --- secrets and signatures ---------------------------------------------------------------

def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the bytes its base64 part encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the same id every time, this attempt's time and signature."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


# --- retries ------------------------------------------------------------------------------

def backoff_seconds(attempts: int, first: float, jitter: Callable[[], float],
                    cap: float = MAX_BACKOFF_SECONDS) -> float:
    """The wait after the `attempts`-th failed attempt: `first`, doubling, capped at `cap`.

    Full jitter on the upper half ([w/2, w]) spreads retries of many deliveries that failed
    together, and still keeps the first retry within `first` seconds. `jitter()` is in [0, 1).
    """
    wait = min(cap, first * 2 ** max(0, attempts - 1))
    return wait / 2 + wait / 2 * jitter()


# --- where a webhook may go ---------------------------------------------------------------

def refused_address(address: str) -> str | None:
    """Why `address` (an IP) may not be called by a webhook of a multi-user service, or None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, refused in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                          ("link-local", ip.is_link_local), ("private", ip.is_private),
                          ("multicast", ip.is_multicast), ("reserved", ip.is_reserved)):
        if refused:
            return f"{address} is a {kind} address"
    return None


def first_refused(addresses: Iterable[str]) -> str | None:
    for address in addresses:
        reason = refused_address(address)
        if reason is not None:
            return reason
    return None


def ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) webhook URL; UrlRefused when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("a webhook URL must be http:// or https://")
    if not parts.hostname:
        raise UrlRefused("a webhook URL must name a host")
    if parts.username or parts.password:
        raise UrlRefused("a webhook URL may not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)
