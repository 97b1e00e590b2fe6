"""Auto Scaling standby, health and processes as AWS does them.

moto moves an instance to Standby and back without touching the group's
target groups, and lets ShouldDecrementDesiredCapacity take desired below
the group's minimum. Here EnterStandby deregisters the instances from the
group's target groups: they are `EnteringStandby` while they drain (until
their in-flight requests end, at most the deregistration delay) and only
then `Standby`, so ExitStandby is refused until they are, as in AWS.
ExitStandby registers them again
(`initial` until their probes pass), and a decrement below the minimum, an
exit above the maximum, or an instance not in the right state is refused
with AWS's ValidationError and changes nothing.

New instances are spread over the group's subnets, each launched into
the availability zone that has fewest of the group's instances (moto puts
them all in the first subnet). Only InService instances are registered
with the group's target groups (moto registers Standby ones too).

An instance leaving the group (TerminateInstanceInAutoScalingGroup, a
scale-in, an unhealthy replacement) is `Terminating`: deregistered from the
target groups, it drains (as above) before EC2 terminates it, as AWS
does; moto terminates it at once and leaves it a registered target.
Scale-in picks InService instances only, from the zone with most of them
(moto may pick a Standby one).

Health: every 10 s (scaled), an InService instance whose EC2 state is not
running, or, with health check type ELB and past the grace period since
launch, whose target is `unhealthy` in one of the group's target groups,
is marked Unhealthy and replaced (moto never checks), and a group whose
InService count differs from its desired capacity converges on it.

Suspended processes are honoured: Launch (no instance is launched),
Terminate (no scale-in, no replacement), HealthCheck (nothing is marked
Unhealthy), ReplaceUnhealthy (Unhealthy instances stay), AddToLoadBalancer
(instances launched meanwhile are never registered). AZRebalance,
AlarmNotification, ScheduledActions and InstanceRefresh have nothing to
suspend here: the emulator runs none of them.
"""

import datetime
import threading
import time

from moto.autoscaling import models
from moto.autoscaling.exceptions import ValidationError

from . import clock, elbv2

PATCHED = [
    (models.AutoScalingBackend, "enter_standby_instances"),
    (models.AutoScalingBackend, "exit_standby_instances"),
    (models.AutoScalingBackend, "terminate_instance"),
    (models.AutoScalingBackend, "update_attached_target_groups"),
    (models.FakeAutoScalingGroup, "replace_autoscaling_group_instances"),
    (models.FakeAutoScalingGroup, "set_desired_capacity"),
    # Read, not replaced: what `suspended` relies on.
    (models.FakeAutoScalingGroup, "suspended_processes"),
]

# How often the groups check their instances' health, in AWS seconds.
HEALTH_CHECK_INTERVAL = 10.0

# The patched calls and the health checker change groups one at a time.
_lock = threading.RLock()
# Instances launched while AddToLoadBalancer was suspended.
_never_registered: set[str] = set()

_original_enter = models.AutoScalingBackend.enter_standby_instances
_original_exit = models.AutoScalingBackend.exit_standby_instances
_original_set_desired = models.FakeAutoScalingGroup.set_desired_capacity
_original_launch = models.FakeAutoScalingGroup.replace_autoscaling_group_instances


def suspended(group) -> set[str]:
    return {p["ProcessName"] for p in group.suspended_processes}


def _states(group, instance_ids, want: str) -> None:
    by_id = {s.instance.id: s for s in group.instance_states}
    for instance_id in instance_ids:
        state = by_id.get(instance_id)
        if state is None:
            raise ValidationError(
                f"The instance {instance_id} is not part of Auto Scaling group {group.name}."
            )
        if state.lifecycle_state != want:
            raise ValidationError(
                f"The instance {instance_id} is not in {want}."
            )


def _target_groups(backend, group) -> list:
    found = (backend.elbv2_backend.target_groups.get(a) for a in group.target_group_arns or [])
    return [tg for tg in found if tg is not None]


def _targets(backend, group, instance_ids, register: bool) -> float:
    """Registers or deregisters the instances with the group's target
    groups; answers the longest deregistration delay (scaled) of a group
    they were deregistered from, the most they drain."""
    drain = 0.0
    for target_group in _target_groups(backend, group):
        targets = [{"Id": i, "Port": target_group.port} for i in instance_ids]
        if register:
            backend.elbv2_backend.register_targets(target_group.arn, targets)
            continue
        present = [t for t in targets if t["Id"] in target_group.targets]
        if present:
            backend.elbv2_backend.deregister_targets(target_group.arn, present)
            delay = target_group.attributes.get("deregistration_delay.timeout_seconds", 300)
            drain = max(drain, float(delay) * clock.scale())
    return drain


def _after_drain(backend, group, instance_ids, limit: float, then) -> None:
    """Calls `then` once none of the instances is draining from the
    group's target groups (at once when none had a request in flight), or
    after `limit`, the deregistration delay."""
    groups = _target_groups(backend, group)

    def draining() -> bool:
        return any(elbv2.draining(tg, i) for tg in groups for i in instance_ids)

    if limit <= 0 or not draining():
        then()
        return

    def wait() -> None:
        deadline = time.monotonic() + limit
        while draining() and time.monotonic() < deadline:
            time.sleep(0.02)
        then()

    threading.Thread(target=wait, daemon=True).start()


def _enter_standby(self, group_name, instance_ids, should_decrement):
    with _lock:
        group = self.autoscaling_groups[group_name]
        _states(group, instance_ids, "InService")
        if should_decrement:
            desired = group.desired_capacity - len(instance_ids)
            if desired < group.min_size:
                raise ValidationError(
                    f"AutoScalingGroup {group_name} has min-size={group.min_size}, "
                    f"max-size={group.max_size}, and desired-size={group.desired_capacity}. "
                    "Placing the specified instances into Standby mode would violate the "
                    "group's min-size. Please select fewer instances or reduce min-size."
                )
        activities = _original_enter(self, group_name, instance_ids, should_decrement)
        limit = _targets(self, group, instance_ids, register=False)
        entering = [s for s in group.instance_states if s.instance.id in instance_ids]
        for state in entering:
            state.lifecycle_state = "EnteringStandby"

        def drained() -> None:
            with _lock:
                for state in entering:
                    if state.lifecycle_state == "EnteringStandby":
                        state.lifecycle_state = "Standby"

        _after_drain(self, group, instance_ids, limit, drained)
        return activities


def _exit_standby(self, group_name, instance_ids):
    with _lock:
        group = self.autoscaling_groups[group_name]
        _states(group, instance_ids, "Standby")
        if group.desired_capacity + len(instance_ids) > group.max_size:
            raise ValidationError(
                f"AutoScalingGroup {group_name} has max-size={group.max_size}: moving the "
                "specified instances out of Standby would exceed it."
            )
        activities = _original_exit(self, group_name, instance_ids)
        _targets(self, group, instance_ids, register=True)
        return activities


def _retire(group, states) -> None:
    """Takes instances out of the group as AWS does: Terminating, drained
    from the target groups, then terminated in EC2 and gone."""
    if not states:
        return
    backend = group.autoscaling_backend
    for state in states:
        state.lifecycle_state = "Terminating"
    ids = [s.instance.id for s in states]
    limit = _targets(backend, group, ids, register=False)

    def finish() -> None:
        with _lock:
            ids = [s.instance.id for s in states]
            try:
                backend.ec2_backend.terminate_instances(ids)
            except Exception:  # already gone from EC2
                pass
            group.instance_states = [s for s in group.instance_states if s not in states]

    _after_drain(backend, group, ids, limit, finish)


def _terminate_instance(self, instance_id, should_decrement):
    with _lock:
        state = next(
            (
                s
                for g in self.autoscaling_groups.values()
                for s in g.instance_states
                if s.instance.id == instance_id and s.lifecycle_state != "Terminating"
            ),
            None,
        )
        if state is None:
            raise ValidationError(
                f"Instance Id not found - No managed instance found for instance ID: {instance_id}"
            )
        group = state.instance.autoscaling_group
        original = group.desired_capacity
        if should_decrement:
            if original - 1 < group.min_size:
                raise ValidationError(
                    f"Currently, desiredSize equals minSize ({group.min_size}). Terminating "
                    "instance without replacement will violate group's min size constraint. "
                    "Either set shouldDecrementDesiredCapacity flag to false or lower group's "
                    "min size."
                )
            group.desired_capacity = original - 1
        _retire(group, [state])
        group.set_desired_capacity(group.desired_capacity)
        return models.TerminateInstanceActivity(state.instance, original)


def _scale_in_choice(group, count: int) -> list:
    """InService, unprotected instances, each from the zone that has most
    of the group's instances (AWS's default termination policy first
    balances zones)."""
    candidates = [
        s for s in group.active_instances() if not s.protected_from_scale_in
    ]
    chosen = []
    for _ in range(min(count, len(candidates))):
        per_zone: dict[str, int] = {}
        for s in group.active_instances():
            if s not in chosen:
                per_zone[s.instance.availability_zone] = per_zone.get(s.instance.availability_zone, 0) + 1
        pick = max(
            (s for s in candidates if s not in chosen),
            key=lambda s: (per_zone.get(s.instance.availability_zone, 0), s.instance.id),
        )
        chosen.append(pick)
    return chosen


def _set_desired_capacity(self, new_capacity) -> None:
    with _lock:
        desired = self.min_size if new_capacity is None else new_capacity
        serving = len(self.active_instances())
        processes = suspended(self)
        mixed = self.mixed_instances_policy and self.mixed_instances_policy.get(
            "LaunchTemplate", {}
        ).get("Overrides")
        if mixed or desired == serving or (desired > serving and "Launch" not in processes):
            _original_set_desired(self, new_capacity)
            return
        self.desired_capacity = desired
        if desired < serving and "Terminate" not in processes:
            _retire(self, _scale_in_choice(self, serving - desired))
        if self.name in self.autoscaling_backend.autoscaling_groups:
            self.autoscaling_backend.update_attached_elbs(self.name)
            self.autoscaling_backend.update_attached_target_groups(self.name)


def _update_attached_target_groups(self, group_name) -> None:
    with _lock:
        group = self.autoscaling_groups[group_name]
        ids = [
            s.instance.id
            for s in group.active_instances()
            if s.instance.id not in _never_registered
        ]
        for target_group in _target_groups(self, group):
            missing = [
                {"Id": i, "Port": target_group.port} for i in ids if i not in target_group.targets
            ]
            if missing:
                self.elbv2_backend.register_targets(target_group.arn, missing)


def _launch(self, count_needed, propagated_tags) -> None:
    with _lock:
        if "Launch" in suspended(self):
            return
        before = {s.instance.id for s in self.instance_states}
        _launch_balanced(self, count_needed, propagated_tags)
        if "AddToLoadBalancer" in suspended(self):
            _never_registered.update(
                s.instance.id for s in self.instance_states if s.instance.id not in before
            )


def _launch_balanced(self, count_needed, propagated_tags) -> None:
    subnets = [s for s in (self.vpc_zone_identifier or "").split(",") if s]
    if len(subnets) < 2:
        return _original_launch(self, count_needed, propagated_tags)
    ec2 = self.autoscaling_backend.ec2_backend
    zone_of = {s: ec2.get_subnet(s).availability_zone for s in subnets}
    everything = self.vpc_zone_identifier
    try:
        for _ in range(count_needed):
            counts = {zone: 0 for zone in zone_of.values()}
            for state in self.instance_states:
                zone = state.instance.availability_zone
                if zone in counts and state.lifecycle_state != "Terminating":
                    counts[zone] += 1
            subnet = min(subnets, key=lambda s: (counts[zone_of[s]], subnets.index(s)))
            # moto launches into the first subnet it is given.
            self.vpc_zone_identifier = subnet
            _original_launch(self, 1, dict(propagated_tags))
    finally:
        self.vpc_zone_identifier = everything


def _launched_seconds_ago(instance) -> float:
    launched = instance.launch_time
    if isinstance(launched, str):
        launched = datetime.datetime.fromisoformat(launched.replace("Z", "+00:00"))
    if launched.tzinfo is not None:
        launched = launched.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return (now - launched).total_seconds()


def _unhealthy(group, state) -> bool:
    if state.instance.state not in ("pending", "running"):
        return True
    if group.health_check_type != "ELB":
        return False
    grace = float(group.health_check_grace_period or 0) * clock.scale()
    if _launched_seconds_ago(state.instance) < grace:
        return False
    return any(
        elbv2.state(tg, state.instance.id) == "unhealthy"
        for tg in _target_groups(group.autoscaling_backend, group)
    )


def check_health(backend) -> None:
    """One round of the groups' health checks and replacements."""
    with _lock:
        for group in list(backend.autoscaling_groups.values()):
            processes = suspended(group)
            serving = [s for s in group.instance_states if s.lifecycle_state == "InService"]
            if "HealthCheck" not in processes:
                for state in serving:
                    if state.health_status == "Healthy" and _unhealthy(group, state):
                        state.health_status = "Unhealthy"
            sick = [s for s in serving if s.health_status == "Unhealthy"]
            if sick and not processes & {"ReplaceUnhealthy", "Terminate"}:
                _retire(group, sick)
            # A group converges on its desired capacity (say, once a
            # suspended Launch or Terminate is resumed).
            if len(group.active_instances()) != group.desired_capacity:
                group.set_desired_capacity(group.desired_capacity)


def health_checker() -> None:
    while True:
        time.sleep(HEALTH_CHECK_INTERVAL * clock.scale())
        for _, _, backend in list(models.autoscaling_backends.iter_backends()):
            try:
                check_health(backend)
            except Exception:  # a group changed under us: next round
                continue


def install() -> None:
    models.AutoScalingBackend.enter_standby_instances = _enter_standby
    models.AutoScalingBackend.exit_standby_instances = _exit_standby
    models.AutoScalingBackend.terminate_instance = _terminate_instance
    models.AutoScalingBackend.update_attached_target_groups = _update_attached_target_groups
    models.FakeAutoScalingGroup.replace_autoscaling_group_instances = _launch
    models.FakeAutoScalingGroup.set_desired_capacity = _set_desired_capacity
    threading.Thread(target=health_checker, daemon=True).start()
