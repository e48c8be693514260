"""A webhook receiver for the tests: verifies EVERY delivery's signature with
the standardwebhooks package (an implementation independent of the server's)
and records it.

Usage: receiver.py SECRET RECORD_FILE PORT [STATUS ...]

Listens on 127.0.0.1:PORT (0 picks a free one) and prints `port N` once
listening. Answers the Nth request with the Nth STATUS (then 200). Each request
appends one JSON line to RECORD_FILE: {"id", "verified", "status", "body",
"headers"}; a request whose signature does not verify is recorded with
"verified": false and answered 400.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

secret, record_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
statuses = [int(s) for s in sys.argv[4:]]
hook = Webhook(secret)
seen = [0]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            hook.verify(body, headers)
            verified = True
        except Exception:
            verified = False
        n = seen[0]
        seen[0] += 1
        status = statuses[n] if n < len(statuses) else 200
        if not verified:
            status = 400
        with open(record_file, "a") as f:
            f.write(json.dumps({
                "id": headers.get("webhook-id"),
                "verified": verified,
                "status": status,
                "body": body,
                "headers": headers,
            }) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
