"""The README's receiver (examples/webhook_receiver.py) verifies what Strata sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.jobs_over_http import submit, upload, wait_status
from tests.orders_data import EXAMPLES, generate, write_csv
from tests.servers import free_port
from tests.service import running_service, service_settings
from tests.waiting import wait_for


def start(port: int, out: Path, secret: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "webhook_receiver.py"), str(port)],
        env={"STRATA_WEBHOOK_SECRET": secret, "PATH": ""}, stdout=out.open("wb"),
        stderr=subprocess.DEVNULL)


async def test_the_example_receiver_prints_a_verified_job_succeeded(
    database_url: str, tmp_path: Path, orders_job: dict[str, Any],
) -> None:
    port, out = free_port(), tmp_path / "receiver.out"
    settings = service_settings(database_url, tmp_path, webhook_poll_seconds=0.05)
    files = write_csv(generate(300, seed=8), tmp_path / "src", files=1)
    async with running_service(settings) as api:
        hook = (await api.post("/v1/webhooks", json={
            "url": f"http://127.0.0.1:{port}/", "events": ["job.succeeded"]})).json()
        receiver = start(port, out, hook["secret"])
        try:
            async def answers() -> bool:
                try:
                    async with httpx.AsyncClient() as client:
                        forged = await client.post(f"http://127.0.0.1:{port}/", content=b"{}",
                                                   headers={"webhook-id": "msg_x",
                                                            "webhook-timestamp": "1",
                                                            "webhook-signature": "v1,AAAA"})
                    return forged.status_code == 400
                except httpx.TransportError:
                    return False

            await wait_for(answers, timeout=10, message="the receiver refusing a forgery")
            await upload(api, files)
            job_id = await submit(api, orders_job)
            assert (await wait_status(api, job_id))["status"] == "Succeeded"
            line = await wait_for(lambda: out.read_text().strip(), timeout=10,
                                  message="the receiver's line")
        finally:
            receiver.kill()
            receiver.wait()
    assert line.startswith(f"job.succeeded {job_id} Succeeded {{")
