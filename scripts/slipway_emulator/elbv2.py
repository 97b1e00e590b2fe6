"""ELBv2 target health as a load balancer measures it, for local instances.

moto calls every registered target healthy at once. Here a target whose
instance is a registered local host (see ssm.py; its `port` is where the
instance serves) is probed over HTTP as the target group says: its health
check path, matcher, interval, timeout and healthy/unhealthy thresholds.
A new target is `initial` (Elb.RegistrationInProgress) until it passes the
healthy threshold, then `healthy`; it turns `unhealthy` after the unhealthy
threshold of failed probes (Target.ResponseCodeMismatch, Target.Timeout or
Target.FailedHealthChecks). A deregistered one is `draining`
(Target.DeregistrationInProgress) for the group's deregistration delay,
then gone. Times are multiplied by SLIPWAY_EMULATOR_TIME_SCALE (tests make
them short). Targets of instances no local host runs keep moto's answer.
"""

import http.client
import os
import socket
import threading
import time

from moto.elbv2 import models

from . import ssm

PATCHED = [
    (models.FakeTargetGroup, "register"),
    (models.FakeTargetGroup, "deregister"),
    (models.FakeTargetGroup, "health_for"),
    (models.FakeHealthStatus, "target_health"),
    (models.ELBv2Backend, "describe_target_health"),
]

_lock = threading.RLock()
# target group ARN -> target id -> Health
_health: dict[str, dict[str, "Health"]] = {}
_probers: set[str] = set()


def scale() -> float:
    try:
        return max(float(os.environ.get("SLIPWAY_EMULATOR_TIME_SCALE", "1")), 0.001)
    except ValueError:
        return 1.0


class Health:
    def __init__(self, port):
        self.port = port
        self.state = "initial"
        self.reason = "Elb.RegistrationInProgress"
        self.description = "Target registration is in progress"
        self.passed = 0
        self.failed = 0
        self.draining_until = None


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


def observe(group, target_id: str, health: Health) -> None:
    port = (ssm.host(target_id) or {}).get("port")
    if port is None:
        ok, reason, description = False, "Target.FailedHealthChecks", "Health checks failed"
    else:
        ok, reason, description = probe(group, int(port))
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
        for target_id, health in targets.items():
            if health.draining_until is None:
                observe(group, target_id, health)
        time.sleep(float(group.health_check_interval_seconds or 30) * scale())


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
    _original_register(self, targets)
    local = False
    with _lock:
        mine = _health.setdefault(self.arn, {})
        for target in targets:
            if ssm.host(target["Id"]) is not None:
                mine[target["Id"]] = Health(target.get("Port", self.port))
                local = True
    if local:
        ensure_prober(self)


def _deregister(self, targets) -> None:
    _original_deregister(self, targets)
    delay = float(self.attributes.get("deregistration_delay.timeout_seconds", 300)) * scale()
    with _lock:
        for target in targets:
            health = _health.get(self.arn, {}).get(target["Id"])
            if health is not None:
                health.state = "draining"
                health.reason = "Target.DeregistrationInProgress"
                health.description = "Target deregistration is in progress"
                health.draining_until = time.monotonic() + delay


def _health_for(self, target, ec2_backend):
    with _lock:
        health = _health.get(self.arn, {}).get(target["Id"])
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


def install() -> None:
    models.FakeTargetGroup.register = _register
    models.FakeTargetGroup.deregister = _deregister
    models.FakeTargetGroup.health_for = _health_for
    models.FakeHealthStatus.target_health = property(_target_health)
    models.ELBv2Backend.describe_target_health = _describe_target_health
