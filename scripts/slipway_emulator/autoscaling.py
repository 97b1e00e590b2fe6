"""Auto Scaling standby as AWS does it.

moto moves an instance to Standby and back without touching the group's
target groups, and lets ShouldDecrementDesiredCapacity take desired below
the group's minimum. Here EnterStandby deregisters the instances from the
group's target groups (so they drain), ExitStandby registers them again
(`initial` until their probes pass), and a decrement below the minimum, an
exit above the maximum, or an instance not in the right state is refused
with AWS's ValidationError and changes nothing.

New instances are spread over the group's subnets, each launched into
the availability zone that has fewest of the group's instances (moto puts
them all in the first subnet).

Still different from AWS: ELB health does not yet make the group replace
an instance; suspended processes are not honoured.
"""

from moto.autoscaling import models
from moto.autoscaling.exceptions import ValidationError

PATCHED = [
    (models.AutoScalingBackend, "enter_standby_instances"),
    (models.AutoScalingBackend, "exit_standby_instances"),
    (models.FakeAutoScalingGroup, "replace_autoscaling_group_instances"),
]

_original_enter = models.AutoScalingBackend.enter_standby_instances
_original_exit = models.AutoScalingBackend.exit_standby_instances


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


def _targets(backend, group, instance_ids, register: bool) -> None:
    if not group.target_group_arns:
        return
    for arn in group.target_group_arns:
        target_group = backend.elbv2_backend.target_groups.get(arn)
        if target_group is None:
            continue
        targets = [{"Id": i, "Port": target_group.port} for i in instance_ids]
        if register:
            backend.elbv2_backend.register_targets(arn, targets)
        else:
            present = [t for t in targets if t["Id"] in target_group.targets]
            if present:
                backend.elbv2_backend.deregister_targets(arn, present)


def _enter_standby(self, group_name, instance_ids, should_decrement):
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
    _targets(self, group, instance_ids, register=False)
    return activities


def _exit_standby(self, group_name, instance_ids):
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


_original_launch = models.FakeAutoScalingGroup.replace_autoscaling_group_instances


def _launch_balanced(self, count_needed, propagated_tags):
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
                if zone in counts:
                    counts[zone] += 1
            subnet = min(subnets, key=lambda s: (counts[zone_of[s]], subnets.index(s)))
            # moto launches into the first subnet it is given.
            self.vpc_zone_identifier = subnet
            _original_launch(self, 1, dict(propagated_tags))
    finally:
        self.vpc_zone_identifier = everything


def install() -> None:
    models.AutoScalingBackend.enter_standby_instances = _enter_standby
    models.AutoScalingBackend.exit_standby_instances = _exit_standby
    models.FakeAutoScalingGroup.replace_autoscaling_group_instances = _launch_balanced
