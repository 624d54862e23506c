"""Standard Webhooks signing, checked against the reference library; retry waits; addresses."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from app.domain.webhooks import (
    SECRET_PREFIX,
    EventType,
    UrlRefused,
    backoff_seconds,
    check_url,
    event_type_of,
    new_secret,
    refused_address,
    secret_key,
    signed_headers,
)


def test_a_secret_is_whsec_and_the_base64_of_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 24
    assert secret_key(secret) == base64.b64decode(secret[len(SECRET_PREFIX):])
    assert new_secret() != secret


def test_the_reference_library_verifies_what_we_sign() -> None:
    secret, body = new_secret(), b'{"type":"job.succeeded","data":{"job_id":"j1"}}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    assert Verifier(secret).verify(body, headers) is not None


@pytest.mark.parametrize("tamper", ["body", "id", "secret"])
def test_the_reference_library_rejects_a_tampered_message(tamper: str) -> None:
    secret, body = new_secret(), b'{"type":"job.failed"}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    if tamper == "body":
        body = b'{"type":"job.succeeded"}'
    elif tamper == "id":
        headers["webhook-id"] = "msg_2"
    else:
        secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body, headers)


@pytest.mark.parametrize(("event", "to_status", "expected"), [
    ("succeed", "Succeeded", EventType.JOB_SUCCEEDED),
    ("fail", "Failed", EventType.JOB_FAILED),
    ("cancel", "Cancelled", EventType.JOB_CANCELLED),
    ("stage_done", "ODSToDWD", EventType.JOB_STAGE_DONE),
    ("stage_done", "Completed", EventType.JOB_STAGE_DONE),
    ("start", "LandingToODS", None),
    ("retry_stage", "ODSToDWD", None),
    ("suspend", "ODSToDWD", None),
    ("retry", "ODSToDWD", None),
])
def test_which_transitions_are_reported(event: str, to_status: str,
                                        expected: EventType | None) -> None:
    assert event_type_of(event, to_status) == expected


def test_the_wait_doubles_within_jitter_and_is_capped_at_an_hour() -> None:
    assert [backoff_seconds(n, 5, lambda: 0.999999) for n in (1, 2, 3)] == pytest.approx(
        [5, 10, 20], abs=1e-3)
    assert [backoff_seconds(n, 5, lambda: 0.0) for n in (1, 2, 3)] == [2.5, 5, 10]
    assert backoff_seconds(30, 5, lambda: 0.999999) == pytest.approx(3600, abs=1e-2)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "::1", "::", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
])
def test_internal_addresses_are_refused(address: str) -> None:
    assert refused_address(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:85e5", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(address) is None


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "example.com/x",
                                 "http://user:pw@example.com/", "http://", "http://[::1/"])
def test_only_http_urls_without_credentials_are_webhooks(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url)


def test_the_port_defaults_by_scheme() -> None:
    assert check_url("https://example.com/h") == ("example.com", 443)
    assert check_url("http://example.com:8080/h") == ("example.com", 8080)
