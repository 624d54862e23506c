"""A webhook receiver for Strata in a dozen lines: verify the signature, dedupe by webhook-id.

    pip install standardwebhooks
    STRATA_WEBHOOK_SECRET=whsec_… python examples/webhook_receiver.py 9000
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

seen: set[str] = set()  # a real receiver keeps these in its database


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            event = Webhook(os.environ["STRATA_WEBHOOK_SECRET"]).verify(body, dict(self.headers))
        except WebhookVerificationError:
            self.send_response(400)
        else:
            if self.headers["webhook-id"] not in seen:  # at least once: a retry may repeat it
                seen.add(self.headers["webhook-id"])
                job = event["data"]
                print(event["type"], job["job_id"], job["status"], json.dumps(job["results"]),
                      flush=True)
            self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
