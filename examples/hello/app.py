"""A tiny web app for Slipway's demo and end-to-end tests.

Serves `/` and `/health` on $PORT with Python's standard library only, and
says which release it is (SLIPWAY_RELEASE, set by the agent).

Set the config var BREAK to see a bad deploy fail safely: `BREAK=start`
exits at start-up, `BREAK=health` answers 503 on /health.
"""

import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = os.environ.get("SLIPWAY_RELEASE", "unknown")
GREETING = os.environ.get("GREETING", "Hello from Slipway")
BREAK = os.environ.get("BREAK", "")


# Business metrics, two ways (see README.md): StatsD to the CloudWatch
# agent's listener on the instance, and a CloudWatch embedded-metric-format
# line on stdout. Both are fire-and-forget: no listener, no harm.
STATSD = ("127.0.0.1", int(os.environ.get("STATSD_PORT", "8125")))
_statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def count_greeting():
    try:
        _statsd.sendto(b"hello.greetings:1|c", STATSD)
    except OSError:
        pass
    print(json.dumps({
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": "Slipway/Apps",
                "Dimensions": [["release"]],
                "Metrics": [{"Name": "greetings", "Unit": "Count"}],
            }],
        },
        "release": RELEASE,
        "greetings": 1,
    }), flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health" and BREAK == "health":
            self.send_error(503, "broken on purpose (BREAK=health)")
            return
        if self.path == "/health":
            body = json.dumps({"status": "ok", "release": RELEASE}).encode()
            content_type = "application/json"
        elif self.path == "/":
            count_greeting()
            body = f"{GREETING}! This is release {RELEASE}.\n".encode()
            content_type = "text/plain; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stdout, where the supervisor collects it.
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main():
    if BREAK == "start":
        print("exiting at start-up on purpose (BREAK=start)", flush=True)
        sys.exit(1)
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"release {RELEASE} listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
