"""SSM Run Command as AWS runs it, on the local platform's instances.

moto's SendCommand targets every instance when Targets is empty, checks no
parameter, runs nothing and answers Success at once; it has no
ListCommandInvocations, CancelCommand or DescribeInstanceInformation. Here:

- An instance is a managed node once its local host registers it, by
  writing `$SLIPWAY_EMULATOR_HOSTS/<instance-id>.json`:
  `{"dir": ..., "env": {...}, "programs": {"/usr/local/bin/slipway-agent":
  ...}, "pid": <the host process>}`. It is Online while that process lives,
  ConnectionLost after. SendCommand to an instance that is not a managed
  node fails with InvalidInstanceId, as AWS's does.
- SendCommand targets exactly its InstanceIds (or what its Targets match),
  checks the parameters against the document's allowedValues and
  allowedPattern (InvalidParameters otherwise), and runs each
  aws:runShellScript step with /bin/sh in the instance's directory and
  environment, a program the document names by its instance path (the
  agent at /usr/local/bin/slipway-agent) replaced by the host's own.
- Each invocation goes Pending -> InProgress -> Success | Failed |
  TimedOut | Cancelled with the script's exit code; a step past its
  timeoutSeconds is killed (ExecutionTimedOut).
- Output goes to the command's bucket and prefix at SSM's layout,
  `<prefix>/<command-id>/<instance-id>/awsrunShellScript/<step>/stdout`
  (and `stderr`); inline it is truncated as SSM does: 24,000 characters of
  stdout and 8,000 of stderr in GetCommandInvocation, 2,500 of the plugin
  output in ListCommandInvocations.
- CancelCommand kills the step's process group.

- A registered node whose host is not running (ConnectionLost) gets its
  invocation Delayed, retried until the command's delivery timeout
  (TimeoutSeconds, times SLIPWAY_EMULATOR_TIME_SCALE), then TimedOut with
  DeliveryTimedOut; one whose registration went away (its instance is
  gone) is Failed, Undeliverable.

Where it still differs from AWS: delivery to an Online node is immediate;
a node that goes away mid-command does not end its invocation (the step
runs on, on this machine); MaxConcurrency and MaxErrors are ignored; no
CloudWatch output.
"""

import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time

import yaml
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.s3.models import s3_backends
from moto.ssm import models, responses

from . import clock

# How often delivery to a node that lost its connection is retried, in AWS
# seconds.
DELIVERY_RETRY = 5.0
STDOUT_INLINE = 24_000
STDERR_INLINE = 8_000
PLUGIN_INLINE = 2_500
TRUNCATED = "\n---Output truncated---"
ERROR_MARK = "\n----------ERROR-------\n"

PATCHED = [
    (models.SimpleSystemManagerBackend, "send_command"),
    (models.SimpleSystemManagerBackend, "get_command_invocation"),
    (models.Command, "_get_instance_ids_from_targets"),
    (models.Command, "response_object"),
    (responses.SimpleSystemManagerResponse, "get_command_invocation"),
]

_lock = threading.RLock()


class SsmError(ServiceException):
    pass


def hosts_dir() -> str | None:
    return os.environ.get("SLIPWAY_EMULATOR_HOSTS")


def host(instance_id: str) -> dict | None:
    """The local host of a managed node, if it registered."""
    root = hosts_dir()
    if not root or not re.fullmatch(r"[a-z0-9-]+", instance_id):
        return None
    try:
        with open(os.path.join(root, f"{instance_id}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def online(found: dict) -> bool:
    try:
        os.kill(int(found.get("pid", 0)), 0)
    except (OSError, ValueError):
        return False
    return os.path.isdir(found.get("dir", ""))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


# The document.


def document_content(backend, name: str) -> dict:
    documents = backend._documents.get(name)
    if documents is None:
        raise SsmError("InvalidDocument", f"Document with name {name} does not exist.")
    doc = documents.get_default_version()
    content = doc.content
    if isinstance(content, dict):
        return content
    return yaml.safe_load(content) if doc.document_format == "YAML" else json.loads(content)


def checked_parameters(content: dict, given: dict) -> dict[str, str]:
    """The parameters, each against the document's declaration."""
    declared = content.get("parameters") or {}
    values: dict[str, str] = {}
    for name in given:
        if name not in declared:
            raise SsmError("InvalidParameters", f"The parameter {name} is not in the document.")
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            if not isinstance(value, list) or len(value) != 1:
                raise SsmError("InvalidParameters", f"Parameter {name} takes one value.")
            value = str(value[0])
        elif "default" in spec:
            value = str(spec["default"])
        else:
            raise SsmError("InvalidParameters", f"The required parameter {name} is missing.")
        allowed = spec.get("allowedValues")
        if allowed is not None and value not in [str(a) for a in allowed]:
            raise SsmError(
                "InvalidParameters",
                f"Parameter {name} is not one of the allowed values.",
            )
        pattern = spec.get("allowedPattern")
        if pattern is not None and not re.search(pattern, value):
            raise SsmError(
                "InvalidParameters",
                f"Parameter {name} does not match the allowed pattern {pattern}.",
            )
        values[name] = value
    return values


def shell_steps(content: dict, values: dict[str, str]) -> list[tuple[str, str, int]]:
    """(name, script, timeout) of each aws:runShellScript step."""
    steps = []
    for i, step in enumerate(content.get("mainSteps") or []):
        if step.get("action") != "aws:runShellScript":
            continue
        inputs = step.get("inputs") or {}
        lines = inputs.get("runCommand") or []
        script = "\n".join(lines if isinstance(lines, list) else [lines])
        for name, value in values.items():
            script = re.sub(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", lambda _: value, script)
        timeout = int(inputs.get("timeoutSeconds") or 3600)
        steps.append((step.get("name") or f"{i}.awsrunShellScript", script, timeout))
    return steps


# Running it.


class Invocation:
    def __init__(self, command, instance_id: str, steps):
        self.command = command
        self.instance_id = instance_id
        self.steps = steps
        self.status = "Pending"
        self.details = "Pending"
        self.code = -1
        self.started = None
        self.finished = None
        self.stdout = ""
        self.stderr = ""
        self.process = None
        self.cancelled = False

    def step(self) -> str:
        """The step whose output the invocation reports (the first)."""
        return self.steps[0][0] if self.steps else "aws:runShellScript"

    def output_prefix(self) -> str:
        prefix = self.command.output_s3_key_prefix.rstrip("/")
        parts = [p for p in [prefix, self.command.command_id, self.instance_id] if p]
        return "/".join(parts + ["awsrunShellScript"])

    def output_url(self, step: str, stream: str) -> str:
        bucket = self.command.output_s3_bucket_name
        if not bucket:
            return ""
        region = self.command.backend_region
        return f"https://s3.{region}.amazonaws.com/{bucket}/{self.output_prefix()}/{step}/{stream}"

    def deliver(self) -> dict | None:
        """The node's host once it is Online. While it is not (its agent
        lost its connection) the invocation is Delayed and retried, until
        the command's delivery timeout (TimeoutSeconds, scaled): then
        TimedOut, DeliveryTimedOut. A node that is no longer registered
        (its instance is gone) is Undeliverable."""
        limit = float(self.command.timeout_seconds or 3600) * clock.scale()
        deadline = time.monotonic() + limit
        while True:
            found = host(self.instance_id)
            with _lock:
                if self.cancelled:
                    return None
                if found is None:
                    self.status, self.details = "Failed", "Undeliverable"
                    self.finished = now()
                    return None
                if online(found):
                    self.status, self.details = "InProgress", "InProgress"
                    self.started = now()
                    return found
                if time.monotonic() >= deadline:
                    self.status, self.details = "TimedOut", "DeliveryTimedOut"
                    self.finished = now()
                    return None
                self.status, self.details = "Delayed", "Delayed"
            time.sleep(min(DELIVERY_RETRY * clock.scale(), max(deadline - time.monotonic(), 0)))

    def run(self) -> None:
        found = self.deliver()
        if found is None:
            return
        code = 0
        for name, script, timeout in self.steps:
            for program, local in (found.get("programs") or {}).items():
                script = script.replace(program, shlex.quote(local))
            code, out, err, timed_out = self.run_step(found, script, timeout)
            self.stdout += out
            self.stderr += err
            self.store(name, out, err)
            if timed_out:
                self.finish("TimedOut", "ExecutionTimedOut", -1)
                return
            if self.cancelled:
                self.finish("Cancelled", "Cancelled", -1)
                return
            if code != 0:
                break
        if code == 0:
            self.finish("Success", "Success", 0)
        else:
            self.finish("Failed", "Failed", code)

    def run_step(self, found: dict, script: str, timeout: int):
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
            f.write(script + "\n")
            path = f.name
        try:
            with _lock:
                if self.cancelled:
                    return -1, "", "", False
                self.process = subprocess.Popen(
                    ["/bin/sh", path],
                    cwd=found["dir"],
                    env={k: str(v) for k, v in (found.get("env") or {}).items()},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            try:
                out, err = self.process.communicate(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                kill_group(self.process)
                out, err = self.process.communicate()
                timed_out = True
            return (
                self.process.returncode,
                out.decode("utf-8", "replace"),
                err.decode("utf-8", "replace"),
                timed_out,
            )
        finally:
            os.unlink(path)

    def store(self, step: str, out: str, err: str) -> None:
        bucket = self.command.output_s3_bucket_name
        if not bucket:
            return
        s3 = s3_backends[self.command.account_id]["aws"]
        base = f"{self.output_prefix()}/{step}"
        s3.put_object(bucket, f"{base}/stdout", out.encode())
        if err:
            s3.put_object(bucket, f"{base}/stderr", err.encode())

    def finish(self, status: str, details: str, code: int) -> None:
        with _lock:
            self.status, self.details, self.code = status, details, code
            self.finished = now()
            self.process = None

    def cancel(self) -> None:
        with _lock:
            self.cancelled = True
            if self.status in ("Pending", "Delayed"):
                self.status, self.details = "Cancelled", "Cancelled"
                self.finished = now()
            elif self.process is not None:
                kill_group(self.process)

    def plugin_output(self) -> str:
        text = self.stdout + (ERROR_MARK + self.stderr if self.stderr else "")
        return truncated(text, PLUGIN_INLINE)

    def list_entry(self, details: bool) -> dict:
        step = self.step()
        entry = {
            "CommandId": self.command.command_id,
            "InstanceId": self.instance_id,
            "Comment": self.command.comment,
            "DocumentName": self.command.document_name,
            "DocumentVersion": "$DEFAULT",
            "RequestedDateTime": self.command.requested_date_time,
            "Status": self.status,
            "StatusDetails": self.details,
            "StandardOutputUrl": self.output_url(step, "stdout"),
            "StandardErrorUrl": self.output_url(step, "stderr"),
            "CommandPlugins": [],
        }
        if details:
            plugin = {
                "Name": step,
                "Status": self.status,
                "StatusDetails": self.details,
                "ResponseCode": self.code,
                "Output": self.plugin_output(),
                "StandardOutputUrl": self.output_url(step, "stdout"),
                "StandardErrorUrl": self.output_url(step, "stderr"),
                "OutputS3Region": self.command.backend_region,
                "OutputS3BucketName": self.command.output_s3_bucket_name,
                "OutputS3KeyPrefix": self.output_prefix(),
            }
            if self.started:
                plugin["ResponseStartDateTime"] = self.started
            if self.finished:
                plugin["ResponseFinishDateTime"] = self.finished
            entry["CommandPlugins"] = [plugin]
        return entry

    def get_entry(self) -> dict:
        step = self.step()
        elapsed = ""
        if self.started:
            seconds = ((self.finished or now()) - self.started).total_seconds()
            elapsed = f"PT{seconds:.3f}S"
        return {
            "CommandId": self.command.command_id,
            "InstanceId": self.instance_id,
            "Comment": self.command.comment,
            "DocumentName": self.command.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": step,
            "ResponseCode": self.code,
            "ExecutionStartDateTime": self.started.isoformat() if self.started else "",
            "ExecutionElapsedTime": elapsed,
            "ExecutionEndDateTime": self.finished.isoformat() if self.finished else "",
            "Status": self.status,
            "StatusDetails": self.details,
            "StandardOutputContent": truncated(self.stdout, STDOUT_INLINE),
            "StandardOutputUrl": self.output_url(step, "stdout"),
            "StandardErrorContent": truncated(self.stderr, STDERR_INLINE),
            "StandardErrorUrl": self.output_url(step, "stderr"),
        }


def kill_group(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass


def command_status(command) -> tuple[str, str]:
    runs = list(command.slipway_invocations.values())
    states = {r.status for r in runs}
    if states & {"Pending", "InProgress"}:
        return ("InProgress", "InProgress") if "InProgress" in states else ("Pending", "Pending")
    for status in ("Failed", "TimedOut", "Cancelled"):
        if status in states:
            return status, status
    return "Success", "Success"


# The patches.

_original_targets = models.Command._get_instance_ids_from_targets
_original_response_object = models.Command.response_object


def _instance_ids_from_targets(self) -> list[str]:
    # moto filters EC2 with no filter at all when Targets is empty: every
    # instance of the account. A command with InstanceIds only targets those.
    if not self.targets:
        return []
    ids = []
    rest = []
    for target in self.targets:
        if target.get("Key") == "InstanceIds":
            ids += target.get("Values") or []
        else:
            rest.append(target)
    if rest:
        ec2 = ec2_backends[self.account_id][self.backend_region]
        filters = {t["Key"]: t["Values"] for t in rest}
        for reservation in ec2.all_reservations(filters=filters):
            ids += [i.id for i in reservation.instances]
    return ids


def _response_object(self) -> dict:
    answer = _original_response_object(self)
    if hasattr(self, "slipway_invocations"):
        with _lock:
            answer["Status"], answer["StatusDetails"] = command_status(self)
            runs = self.slipway_invocations.values()
            answer["CompletedCount"] = sum(r.status not in ("Pending", "InProgress") for r in runs)
            answer["ErrorCount"] = sum(r.status in ("Failed", "TimedOut") for r in runs)
    return answer


def _send_command(self, **kwargs):
    content = document_content(self, kwargs["document_name"])
    values = checked_parameters(content, kwargs.get("parameters") or {})
    command = models.Command(
        account_id=self.account_id,
        backend_region=self.region_name,
        **kwargs,
    )
    if not command.instance_ids:
        raise SsmError("InvalidInstanceId", "No instance matches the command's targets.")
    for instance_id in command.instance_ids:
        if host(instance_id) is None:
            raise SsmError(
                "InvalidInstanceId",
                f"Instances [[{instance_id}]] not in a valid state for account {self.account_id}",
            )
    steps = shell_steps(content, values)
    command.slipway_invocations = {
        i: Invocation(command, i, steps) for i in sorted(command.instance_ids)
    }
    command.invocations = []
    self._commands.append(command)
    for invocation in command.slipway_invocations.values():
        threading.Thread(target=invocation.run, daemon=True).start()
    return command


def _get_command_invocation(self, command_id, instance_id, plugin_name):
    command = self.get_command_by_id(command_id)
    invocation = getattr(command, "slipway_invocations", {}).get(instance_id)
    if invocation is None:
        raise SsmError("InvocationDoesNotExist", "The command invocation does not exist.")
    with _lock:
        return invocation.get_entry()


def _list_command_invocations(self) -> ActionResult:
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = bool(self._get_param("Details", False))
    commands = self.ssm_backend.list_commands(command_id, None)
    entries = []
    with _lock:
        for command in commands:
            for invocation in getattr(command, "slipway_invocations", {}).values():
                if instance_id and invocation.instance_id != instance_id:
                    continue
                entries.append(invocation.list_entry(details))
    return ActionResult({"CommandInvocations": entries})


def _cancel_command(self) -> ActionResult:
    command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
    wanted = self._get_param("InstanceIds") or None
    for invocation in getattr(command, "slipway_invocations", {}).values():
        if wanted is None or invocation.instance_id in wanted:
            invocation.cancel()
    return ActionResult({})


def _describe_instance_information(self) -> ActionResult:
    root = hosts_dir()
    names = sorted(os.listdir(root)) if root and os.path.isdir(root) else []
    wanted_ids = None
    wanted_ping = None
    tags: list[tuple[str, list[str]]] = []
    filters = (self._get_param("Filters") or []) + [
        {"Key": f.get("key"), "Values": f.get("valueSet")}
        for f in self._get_param("InstanceInformationFilterList") or []
    ]
    for f in filters:
        key, values = f.get("Key"), f.get("Values") or []
        if key == "InstanceIds":
            wanted_ids = set(values)
        elif key == "PingStatus":
            wanted_ping = set(values)
        elif key and key.startswith("tag:"):
            tags.append((key[4:], values))
    ec2 = ec2_backends[self.current_account][self.region]
    answer = []
    for name in names:
        instance_id = name.removesuffix(".json")
        found = host(instance_id)
        if found is None or (wanted_ids is not None and instance_id not in wanted_ids):
            continue
        ping = "Online" if online(found) else "ConnectionLost"
        if wanted_ping is not None and ping not in wanted_ping:
            continue
        if tags:
            have = {
                t["key"]: t["value"]
                for t in ec2.describe_tags(filters={"resource-id": [instance_id]})
            }
            if not all(have.get(k) in values for k, values in tags):
                continue
        answer.append(
            {
                "InstanceId": instance_id,
                "PingStatus": ping,
                "LastPingDateTime": now(),
                "AgentVersion": "3.3.0.0",
                "IsLatestVersion": True,
                "PlatformType": "Linux",
                "PlatformName": "Amazon Linux",
                "PlatformVersion": "2023",
                "ResourceType": "EC2Instance",
                "IPAddress": "127.0.0.1",
                "ComputerName": instance_id,
            }
        )
    return ActionResult({"InstanceInformationList": answer})


def install() -> None:
    models.Command._get_instance_ids_from_targets = _instance_ids_from_targets
    models.Command.response_object = _response_object
    models.SimpleSystemManagerBackend.send_command = _send_command
    models.SimpleSystemManagerBackend.get_command_invocation = _get_command_invocation
    responses.SimpleSystemManagerResponse.list_command_invocations = _list_command_invocations
    responses.SimpleSystemManagerResponse.cancel_command = _cancel_command
    responses.SimpleSystemManagerResponse.describe_instance_information = (
        _describe_instance_information
    )
