"""S3 throttling on demand, answered as S3 answers it.

S3 refuses requests it is too busy for with 503 SlowDown and expects the
client to back off and retry; moto never refuses one, so nothing local shows
whether the platform's SDK clients ride over it. Here, once a test asks for
it, a fraction of S3 requests (the requests moto's S3 app serves, as calls.py
finds a request's service) is answered with S3's SlowDown error, HTTP 503
with its XML (no body to a HEAD), without running: the store is as if the
request never came. Each request is drawn on its own, from a seed when one is
given, so a run can be repeated. Off at start; set and read at run time over
HTTP on the emulator itself, before moto's routing, so neither a fault nor
the call record (calls.py) ever sees these requests:

    POST /_slipway/faults {"s3_slowdown": 0.2, "seed": 7}    (0 turns it off)
    GET  /_slipway/faults
    -> {"s3_slowdown": 0.2, "seed": 7, "s3_requests": N, "s3_injected": M}

s3_requests counts the S3 requests seen, s3_injected those answered
SlowDown; a POST starts both again. A fraction outside 0..1, or a body that
is not such an object, is answered 400 and changes nothing. A faulted
request is still recorded by calls.py (installed after this), with status
503: the caller made it.
"""

import random
import threading
import uuid

from flask import Flask, Response, current_app, jsonify
from flask import request as flask_request

from moto.core import utils
from moto.moto_server import werkzeug_app

PATCHED = [
    (utils.convert_to_flask_response, "__call__"),
    (werkzeug_app.DomainDispatcherApplication, "get_application"),
]

PREFIX = "/_slipway/"
SLOWDOWN = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message>"
    "<RequestId>{}</RequestId></Error>"
)

_lock = threading.Lock()


class _Faults:
    def __init__(self, fraction=0.0, seed=None):
        self.fraction, self.seed = fraction, seed
        self.rng = random.Random(seed)
        self.requests = self.injected = 0

    def draw(self):
        """Whether this S3 request is answered SlowDown (under _lock)."""
        self.requests += 1
        hit = self.fraction > 0 and self.rng.random() < self.fraction
        self.injected += hit
        return hit

    def state(self):
        return {"s3_slowdown": self.fraction, "seed": self.seed,
                "s3_requests": self.requests, "s3_injected": self.injected}


_faults = _Faults()


def _slowdown():
    # Read what the client sends before answering: closing on an unread
    # body would reset the connection instead of delivering the 503.
    while flask_request.stream.read(1 << 16):
        pass
    request_id = uuid.uuid4().hex[:16].upper()
    body = "" if flask_request.method == "HEAD" else SLOWDOWN.format(request_id)
    response = Response(body, status=503, content_type="application/xml")
    response.headers["x-amz-request-id"] = request_id
    return response


def _faulting(original):
    def __call__(self, *args, **kwargs):
        if getattr(current_app, "service", None) == "s3":
            with _lock:
                hit = _faults.draw()
            if hit:
                return _slowdown()
        return original(self, *args, **kwargs)

    return __call__


def _settings(body):
    """(fraction, seed) of a POST's body; ValueError if it is not one."""
    if not isinstance(body, dict) or set(body) - {"s3_slowdown", "seed"}:
        raise ValueError('expected {"s3_slowdown": 0..1, "seed": integer (optional)}')
    fraction, seed = body.get("s3_slowdown"), body.get("seed")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction <= 1:
        raise ValueError(f"s3_slowdown must be a number from 0 to 1, not {fraction!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    return float(fraction), seed


control = Flask(__name__)
control.service = "slipway"


@control.route(PREFIX + "faults", methods=["GET", "POST"])
def _control_faults():
    global _faults
    if flask_request.method == "POST":
        try:
            fraction, seed = _settings(flask_request.get_json(force=True, silent=True))
        except ValueError as e:
            return jsonify(message=str(e)), 400
        with _lock:
            _faults = _Faults(fraction, seed)
    with _lock:
        return jsonify(_faults.state())


def _routed(original):
    def get_application(self, environ):
        path = environ.get("PATH_INFO", "")
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if path.startswith(PREFIX):
            return control
        return original(self, environ)

    return get_application


def install() -> None:
    owner = utils.convert_to_flask_response
    owner.__call__ = _faulting(owner.__call__)
    owner = werkzeug_app.DomainDispatcherApplication
    owner.get_application = _routed(owner.get_application)
