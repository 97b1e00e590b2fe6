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
becomes its DNSName; it is the load balancer's HTTP listener (the lowest
port, if it has several). A request meets the listener's rules in priority
order, as an ALB's: the first whose conditions all match (source-ip,
path-pattern, host-header, http-request-method, http-header, query-string,
with ALB's `*` and `?` wildcards) decides, else the default actions. Its
final action answers: fixed-response with its status, type and body;
redirect to its Location with ALB's #{protocol}, #{host}, #{port},
#{path} and #{query}; forward to the next healthy target of its groups
(round robin), never to a draining one (whose open requests finish), to
every registered one when none is healthy (an ALB fails open), answering
503 when none is registered, 502 when the target refuses, 504 when it does
not answer in time. An action it cannot perform (authenticate-*) answers
501, saying so.
"""

import http.client
import http.server
import ipaddress
import itertools
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

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


@dataclass
class Request:
    """What a listener rule's conditions look at."""

    method: str
    path: str
    query: list[tuple[str, str]]
    host: str
    headers: dict[str, list[str]]  # lower-cased names
    source: str

    @classmethod
    def of(cls, handler) -> "Request":
        url = urlsplit(handler.path)
        headers: dict[str, list[str]] = {}
        for name, value in handler.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        host = (headers.get("host") or [""])[0]
        if not host.endswith("]"):  # the port goes; an IPv6 address's colons stay
            host = host.rsplit(":", 1)[0]
        return cls(
            method=handler.command,
            path=url.path or "/",
            query=parse_qsl(url.query, keep_blank_values=True),
            host=host,
            headers=headers,
            source=handler.client_address[0],
        )


def wildcard(pattern: str, value: str, case: bool = True) -> bool:
    """ALB's match: `*` any characters, `?` one, everything else itself."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def in_cidrs(source: str, cidrs: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    for cidr in cidrs:
        try:
            if address in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def condition_matches(condition: dict, request: Request) -> bool:
    """One rule condition, as in the API (its Field and its *Config, or the
    older Values for host-header and path-pattern). A field this emulator
    does not know matches nothing."""
    field = condition.get("Field")

    def values(config: str) -> list:
        return (condition.get(config) or {}).get("Values") or condition.get("Values") or []

    if field == "source-ip":
        return in_cidrs(request.source, values("SourceIpConfig"))
    if field == "path-pattern":
        return any(wildcard(v, request.path) for v in values("PathPatternConfig"))
    if field == "host-header":
        return any(wildcard(v, request.host, case=False) for v in values("HostHeaderConfig"))
    if field == "http-request-method":
        return request.method in values("HttpRequestMethodConfig")
    if field == "http-header":
        config = condition.get("HttpHeaderConfig") or {}
        sent = request.headers.get((config.get("HttpHeaderName") or "").lower(), [])
        return any(wildcard(v, h, case=False) for v in config.get("Values") or [] for h in sent)
    if field == "query-string":
        pairs = (condition.get("QueryStringConfig") or {}).get("Values") or []
        return any(
            (p.get("Key") is None or wildcard(p["Key"], k, case=False))
            and wildcard(p.get("Value", "*"), v, case=False)
            for p in pairs
            for k, v in request.query
        )
    return False


def serving_listener(lb):
    """The listener this proxy is: the HTTP one, the lowest port of several."""
    listeners = [l for l in lb.listeners.values() if l.protocol == "HTTP"]
    return min(listeners, key=lambda l: int(l.port)) if listeners else None


def final_action(listener, request: Request):
    """The action that answers `request`: the last, in Order, of the first
    matching rule's actions (ALB runs authenticate-* first), or of the
    default ones."""
    rules = [r for r in listener.rules.values() if not r.is_default]
    actions = listener.default_actions
    for rule in sorted(rules, key=lambda r: int(r.priority)):
        if all(condition_matches(c, request) for c in rule.conditions):
            actions = rule.actions
            break
    ordered = sorted(actions, key=lambda a: int(a.data.get("Order") or 50001))
    return ordered[-1] if ordered else None


def redirect_location(config: dict, request: Request, listener) -> tuple[int, str]:
    """A redirect action's status and Location, its #{…} filled in."""
    query = "&".join(f"{k}={v}" for k, v in request.query)
    known = {
        "protocol": listener.protocol.lower(),
        "host": request.host,
        "port": str(listener.port),
        "path": request.path.lstrip("/"),
        "query": query,
    }

    def filled(key: str, default: str) -> str:
        text = config.get(key) or default
        return re.sub(r"#\{(\w+)\}", lambda m: known.get(m.group(1), m.group(0)), text)

    protocol = filled("Protocol", "#{protocol}").lower()
    port = filled("Port", "#{port}")
    host = filled("Host", "#{host}")
    path = "/" + filled("Path", "/#{path}").lstrip("/")
    query = filled("Query", "#{query}")
    default_port = {"http": "80", "https": "443"}.get(protocol)
    location = f"{protocol}://{host}" + ("" if port == default_port else f":{port}") + path
    if query:
        location += f"?{query}"
    code = 301 if config.get("StatusCode") == "HTTP_301" else 302
    return code, location


def action_groups(backend, action) -> list:
    """The target groups a forward action sends to."""
    arns = []
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


def routable(groups) -> list[Health]:
    """The healthy targets of `groups`; with none healthy, every
    registered one that is not draining (an ALB fails open); none: 503."""
    healthy, registered = [], []
    with _lock:
        for group in groups:
            for target_id in list(group.targets):
                health = tracked(group, target_id)
                if health is None or health.draining_until is not None:
                    continue
                registered.append(health)
                if health.state == "healthy":
                    healthy.append(health)
    return healthy or registered


def choose(groups, turn) -> Health | None:
    """The target for the next request, counted in flight in the same
    step: a deregistration seeing it idle between the choice and the count
    would complete at once, and the request would reach a stopped app."""
    with _lock:
        targets = routable(groups)
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
            self.respond(code, "text/plain", f"{code} {text}\n".encode())

        def respond(self, code: int, content_type: str, body: bytes, headers=()) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def handle_request(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            listener = serving_listener(lb)
            if listener is None:
                self.answer(503, "Service Temporarily Unavailable")
                return
            request = Request.of(self)
            action = final_action(listener, request)
            kind = action.type if action is not None else None
            if kind == "fixed-response":
                config = action.data.get("FixedResponseConfig") or {}
                self.respond(
                    int(config.get("StatusCode") or 200),
                    config.get("ContentType") or "text/plain",
                    (config.get("MessageBody") or "").encode(),
                )
            elif kind == "redirect":
                code, location = redirect_location(
                    action.data.get("RedirectConfig") or {}, request, listener
                )
                self.respond(code, "text/plain", b"", [("Location", location)])
            elif kind == "forward":
                self.forward(action_groups(backend, action), body)
            else:
                self.answer(501, f"Not Implemented: the local load balancer has no {kind} action")

        def forward(self, groups, body) -> None:
            health = choose(groups, turn)
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

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_request

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
