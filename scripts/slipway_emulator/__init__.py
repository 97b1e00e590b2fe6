"""moto, raised to AWS's behaviour where the local platform needs it.

moto stubs the services the production path leans on: SendCommand answers
Success for every instance at once and runs nothing. The modules here patch
its backends in process, before the server starts:

- ssm: Run Command really runs a document's aws:runShellScript steps on
  each targeted instance's local host (see ssm.py).
- elbv2: target health comes from HTTP probes of each local instance, as
  the target group says, and deregistration drains (see elbv2.py).
- autoscaling: standby takes instances out of their target groups (after
  they drain) and back, within the group's bounds; instances leave by
  draining; ELB health replaces instances; suspended processes are
  honoured (see autoscaling.py).
- s3: a conditional write's check and write are one step, as in S3 (see
  s3.py).
- listing: ListObjectsV2 costs its page, as in S3, not the whole bucket
  (see listing.py).
- faults: on request at run time (POST /_slipway/faults), a fraction of S3
  requests is answered 503 SlowDown without running, for testing retries
  (see faults.py).
- calls: with SLIPWAY_EMULATOR_CALLS set, every request is recorded, with
  the IAM authorizations AWS would make for it, for a policy checker (see
  calls.py).
- clock: the time scale all of them share.

`install()` first checks that every attribute it replaces exists in the
pinned moto, so an upgrade that moves one fails loudly at start instead of
silently running the stub.
"""

from . import autoscaling, calls, elbv2, faults, listing, s3, ssm

# calls last: it records every request as answered, faulted ones included.
MODULES = [s3, listing, ssm, elbv2, autoscaling, faults, calls]


def install() -> None:
    missing = [
        f"{owner.__module__}.{owner.__name__}.{name}"
        for module in MODULES
        for owner, name in module.PATCHED
        if not hasattr(owner, name)
    ]
    if missing:
        raise SystemExit(
            "the emulator's patches do not fit this moto (missing: "
            + ", ".join(missing)
            + "); pin the version scripts/install-emulator names"
        )
    for module in MODULES:
        module.install()
