"""ELBv2 target health as a load balancer measures it, for local instances.

moto calls every registered target healthy at once. Here a target whose
instance is a registered local host (see ssm.py; its `port` is where the
instance serves) is probed over HTTP as the target group says: its health
check path, matcher, interval, timeout and healthy/unhealthy thresholds.
A new target is `initial` (Elb.RegistrationInProgress) until it passes the
healthy threshold, then `healthy`; it turns `unhealthy` after the unhealthy
threshold of failed probes (Target.ResponseCodeMismatch, Target.Timeout or
Target.FailedHealthChecks). A deregistered one is `draining`
(Target.DeregistrationInProgress) while requests the load balancer sent
it are still open, at most the group's deregistration delay, then gone;
with none open it is gone at once, as in AWS. Times are multiplied by
SLIPWAY_EMULATOR_TIME_SCALE (tests make them short). Targets of instances
no local host runs keep moto's answer.

A target group made by a stack gets the stack's TargetGroupAttributes
(moto's CloudFormation drops them, so every stack-made group drained for
the default 300 s).

Each load balancer is also a reverse proxy on 127.0.0.1, whose address
becomes its DNSName: it forwards each request to the next healthy target
(round robin), never to a draining one (whose open requests finish), to
every registered one when none is healthy (an ALB fails open), and answers
503 when none is registered, 502 when the target refuses, 504 when it does
not answer in time.
"""

import http.client
import http.server
import itertools
import socket
import threading
import time

from moto.elbv2 import models

from . import ssm
from .clock import scale

PATCHED = [
    (models.FakeTargetGroup, "register"),
    (models.FakeTargetGroup, "deregister"),
    (models.FakeTargetGroup, "health_for"),
    (models.FakeHealthStatus, "target_health"),
    (models.ELBv2Backend, "describe_target_health"),
    (models.ELBv2Backend, "create_load_balancer"),
    (models.FakeTargetGroup, "create_from_cloudformation_json"),
]

_lock = threading.RLock()
# target group ARN -> target id -> Health
_health: dict[str, dict[str, "Health"]] = {}
_probers: set[str] = set()


class Health:
    def __init__(self, group_arn, target_id, port, local_port):
        # Whose health it is; the target's port in the group, and where
        # its host serves it.
        self.group_arn = group_arn
        self.target_id = target_id
        self.port = port
        self.local_port = local_port
        self.state = "initial"
        self.reason = "Elb.RegistrationInProgress"
        self.description = "Target registration is in progress"
        self.passed = 0
        self.failed = 0
        self.draining_until = None
        # Requests the load balancer has forwarded to it and not yet
        # answered.
        self.inflight = 0


def matches(matcher: dict, code: int) -> bool:
    for part in str((matcher or {}).get("HttpCode", "200")).split(","):
        low, _, high = part.strip().partition("-")
        try:
            if int(low) <= code <= int(high or low):
                return True
        except ValueError:
            continue
    return False


def probe(group, port: int) -> tuple[bool, str, str]:
    path = group.health_check_path or "/"
    timeout = float(group.health_check_timeout_seconds or 5) * scale()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(timeout, 0.05))
        conn.request("GET", path, headers={"User-Agent": "ELB-HealthChecker/2.0"})
        code = conn.getresponse().status
        conn.close()
    except (socket.timeout, TimeoutError):
        return False, "Target.Timeout", "Request timed out"
    except OSError:
        return False, "Target.FailedHealthChecks", "Health checks failed"
    if matches(group.matcher, code):
        return True, "", ""
    return False, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{code}]"


def observe(group, health: Health) -> None:
    ok, reason, description = probe(group, health.local_port)
    healthy = int(group.healthy_threshold_count or 5)
    unhealthy = int(group.unhealthy_threshold_count or 2)
    with _lock:
        if health.draining_until is not None:
            return
        if ok:
            health.passed, health.failed = health.passed + 1, 0
            if health.state != "healthy" and health.passed >= healthy:
                health.state, health.reason, health.description = "healthy", None, None
        else:
            health.passed, health.failed = 0, health.failed + 1
            if health.state != "unhealthy" and health.failed >= unhealthy:
                health.state, health.reason, health.description = "unhealthy", reason, description
            elif health.state == "unhealthy":
                health.reason, health.description = reason, description


def prober(group) -> None:
    while True:
        with _lock:
            targets = dict(_health.get(group.arn, {}))
            now = time.monotonic()
            for target_id, health in targets.items():
                if health.draining_until is not None and now >= health.draining_until:
                    _health[group.arn].pop(target_id, None)
        for health in targets.values():
            if health.draining_until is None:
                observe(group, health)
        time.sleep(float(group.health_check_interval_seconds or 30) * scale())


def tracked(group, target_id: str):
    """The health of a registered target its local host serves. A target
    registered before its host came up (an Auto Scaling group registers
    its instances as they launch) is tracked from when the host appears,
    `initial` like any new target."""
    with _lock:
        health = _health.get(group.arn, {}).get(target_id)
        if health is not None or target_id not in group.targets:
            return health
        port = (ssm.host(target_id) or {}).get("port")
        if port is None:
            return None
        health = Health(
            group.arn, target_id, group.targets[target_id].get("Port", group.port), int(port)
        )
        _health.setdefault(group.arn, {})[target_id] = health
    ensure_prober(group)
    return health


def state(group, target_id: str) -> str | None:
    """The measured state of a registered target, if a local host serves
    it (probed from when its host appears, like any)."""
    with _lock:
        health = tracked(group, target_id)
        return None if health is None else health.state


def ensure_prober(group) -> None:
    with _lock:
        if group.arn in _probers:
            return
        _probers.add(group.arn)
    threading.Thread(target=prober, args=(group,), daemon=True).start()


_original_register = models.FakeTargetGroup.register
_original_deregister = models.FakeTargetGroup.deregister
_original_health_for = models.FakeTargetGroup.health_for


def _register(self, targets) -> None:
    with _lock:
        fresh = [t["Id"] for t in targets if t["Id"] not in self.targets]
    _original_register(self, targets)
    with _lock:
        for target_id in fresh:
            # New, or registered again after a deregistration (out of
            # standby): initial. Registering a registered target changes
            # nothing, as in AWS (an Auto Scaling group re-registers its
            # instances whenever its capacity changes).
            _health.get(self.arn, {}).pop(target_id, None)
            tracked(self, target_id)


def _deregister(self, targets) -> None:
    _original_deregister(self, targets)
    delay = float(self.attributes.get("deregistration_delay.timeout_seconds", 300)) * scale()
    with _lock:
        for target in targets:
            health = _health.get(self.arn, {}).get(target["Id"])
            if health is not None and health.inflight == 0:
                # "If a deregistering target has no in-flight requests and
                # no active connections, Elastic Load Balancing immediately
                # completes the deregistration process."
                _health[self.arn].pop(target["Id"], None)
            elif health is not None:
                health.state = "draining"
                health.reason = "Target.DeregistrationInProgress"
                health.description = "Target deregistration is in progress"
                health.draining_until = time.monotonic() + delay


def _health_for(self, target, ec2_backend):
    health = tracked(self, target["Id"])
    with _lock:
        if health is not None:
            return models.FakeHealthStatus(
                target["Id"],
                health.port,
                self.health_check_port,
                health.state,
                health.reason,
                health.description,
            )
    return _original_health_for(self, target, ec2_backend)


_original_describe_target_health = models.ELBv2Backend.describe_target_health


def _describe_target_health(self, target_group_arn, targets):
    # AWS lists draining targets too; moto forgets them at once.
    if not targets:
        group = self.target_groups.get(target_group_arn)
        if group is not None:
            with _lock:
                draining = [
                    {"Id": target_id, "Port": health.port}
                    for target_id, health in _health.get(group.arn, {}).items()
                    if health.draining_until is not None
                ]
            targets = list(group.targets.values()) + draining
    return _original_describe_target_health(self, target_group_arn, targets)


def _target_health(self) -> dict:
    # A healthy target has no reason or description at all.
    answer = {"State": self.status}
    if self.reason:
        answer["Reason"] = self.reason
    if self.description:
        answer["Description"] = self.description
    return answer


# The load balancer itself: a reverse proxy on this machine.

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


def forwarded_groups(backend, lb) -> list:
    arns = []
    for listener in lb.listeners.values():
        for action in listener.default_actions:
            if action.type != "forward":
                continue
            if action.data.get("TargetGroupArn"):
                arns.append(action.data["TargetGroupArn"])
            for tg in (action.data.get("ForwardConfig") or {}).get("TargetGroups", []):
                arns.append(tg.get("TargetGroupArn"))
    return [backend.target_groups[a] for a in arns if a in backend.target_groups]


def draining(group, target_id: str) -> bool:
    """Whether the target is still draining: deregistered with requests in
    flight, within the deregistration delay."""
    with _lock:
        health = _health.get(group.arn, {}).get(target_id)
        if health is None or health.draining_until is None:
            return False
        return time.monotonic() < health.draining_until


def finished(health: Health) -> None:
    """A forwarded request was answered; the last one of a draining target
    completes its deregistration."""
    with _lock:
        health.inflight -= 1
        if health.draining_until is not None and health.inflight == 0:
            mine = _health.get(health.group_arn, {})
            if mine.get(health.target_id) is health:
                mine.pop(health.target_id)


def routable(backend, lb) -> list[Health]:
    """The healthy targets; with none healthy, every registered one that
    is not draining (an ALB fails open); none: 503."""
    healthy, registered = [], []
    with _lock:
        for group in forwarded_groups(backend, lb):
            for target_id in list(group.targets):
                health = tracked(group, target_id)
                if health is None or health.draining_until is not None:
                    continue
                registered.append(health)
                if health.state == "healthy":
                    healthy.append(health)
    return healthy or registered


def choose(backend, lb, turn) -> Health | None:
    """The target for the next request, counted in flight in the same
    step: a deregistration seeing it idle between the choice and the count
    would complete at once, and the request would reach a stopped app."""
    with _lock:
        targets = routable(backend, lb)
        if not targets:
            return None
        health = targets[next(turn) % len(targets)]
        health.inflight += 1
        return health


def proxy_handler(backend, lb):
    turn = itertools.count()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def answer(self, code: int, text: str) -> None:
            body = f"{code} {text}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            health = choose(backend, lb, turn)
            if health is None:
                self.answer(503, "Service Temporarily Unavailable")
                return
            try:
                self.relay(health.local_port, body)
            finally:
                finished(health)

        def relay(self, port: int, body) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["X-Forwarded-For"] = self.client_address[0]
            headers["X-Forwarded-Proto"] = "http"
            headers["X-Forwarded-Port"] = str(self.server.server_address[1])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60 * scale() + 5)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
            except (socket.timeout, TimeoutError):
                self.answer(504, "Gateway Time-out")
                return
            except OSError:
                self.answer(502, "Bad Gateway")
                return
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = forward

    return Handler


_original_create_load_balancer = models.ELBv2Backend.create_load_balancer


def _create_load_balancer(self, *args, **kwargs):
    lb = _original_create_load_balancer(self, *args, **kwargs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler(self, lb))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Its address here is its name: what ship, the UI and the demo use.
    lb.dns_name = f"127.0.0.1:{server.server_address[1]}"
    return lb


_original_target_group_from_stack = models.FakeTargetGroup.create_from_cloudformation_json.__func__


def _target_group_from_stack(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    # moto's CloudFormation drops TargetGroupAttributes (the deregistration
    # delay among them); AWS applies them.
    group = _original_target_group_from_stack(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    )
    attributes = {
        a["Key"]: str(a["Value"])
        for a in cloudformation_json["Properties"].get("TargetGroupAttributes") or []
    }
    if attributes:
        models.elbv2_backends[account_id][region_name].modify_target_group_attributes(
            group.arn, attributes
        )
    return group


def install() -> None:
    models.FakeTargetGroup.register = _register
    models.FakeTargetGroup.deregister = _deregister
    models.FakeTargetGroup.health_for = _health_for
    models.FakeHealthStatus.target_health = property(_target_health)
    models.ELBv2Backend.describe_target_health = _describe_target_health
    models.ELBv2Backend.create_load_balancer = _create_load_balancer
    models.FakeTargetGroup.create_from_cloudformation_json = classmethod(_target_group_from_stack)
