"""Every AWS call the emulator serves, with the authorizations AWS makes for it.

moto refuses nothing a role's policy would refuse (and where it evaluates
IAM at all, it knows its own action names, not IAM's), so the local platform
would pass with a policy production rejects. Here every request is recorded,
never refused, for a checker to hold against the caller's policy: with
SLIPWAY_EMULATOR_CALLS naming a file, one JSON line per request,

    {"key": "AKID" | null, "service": "s3", "operation": "CopyObject",
     "status": 200, "ms": 1.2, "checks": [{"action": "s3:PutObject",
     "resource": "arn:aws:s3:::b/k", "context": {"s3:prefix": ["p/"]}}]}

ms is how long the emulator took to answer, for a benchmark to say where
time goes. key is the caller's access key id (SigV4 header or presigned URL), service
the IAM service prefix, operation the API operation's name, status moto's
HTTP status, checks every (action, resource) AWS authorizes, with the
condition keys the emulator can know, each a list of strings. Resource
tags are read before the call changes them; a created group's or stack's
ARN once it exists. A recorder failure is a line with operation "?" and
"error" in place of checks, and the request goes on. Operations are found by moto's own router
and parameters by its parsers, from the botocore models.
"""

import functools
import gzip
import io
import json
import os
import re
import threading
import time
from urllib.parse import parse_qsl, unquote, urlparse

from flask import current_app
from flask import request as flask_request
from werkzeug.exceptions import HTTPException

from moto import backends
from moto.autoscaling.models import FakeAutoScalingGroup
from moto.cloudformation.models import CloudFormationBackend
from moto.core import parse, routing, utils
from moto.core.request import Request, determine_request_protocol, normalize_request
from moto.iam.models import get_account_id_from

PATCHED = [
    (utils.convert_to_flask_response, "__call__"),
    # Read, not replaced.
    (routing.ServiceOperationRouter, "match"),
    (parse.RequestParser, "parse"),
    (FakeAutoScalingGroup, "arn"),
    (CloudFormationBackend, "get_stack"),
]

NOT_AWS = {"moto_api", "instance_metadata"}
BOTOCORE_NAMES = {"awslambda": "lambda"}
PREFIXES = {"elbv2": "elasticloadbalancing", "elb": "elasticloadbalancing"}
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]*/([^/]*)/")

_lock = threading.Lock()
_out = None


class Call:
    def __init__(self, request):
        self.request = request
        self.key, region = _caller(request)
        self.region = region or "us-east-1"
        self.account = (
            os.environ.get("MOTO_ACCOUNT_ID")
            or request.headers.get("x-moto-account-id")
            or get_account_id_from(self.key or "")
        )
        self.service = self.operation = None
        self.params = {}

    def arn(self, service, resource, region=None, account=None):
        region = self.region if region is None else region
        account = self.account if account is None else account
        return f"arn:aws:{service}:{region}:{account}:{resource}"

    def backend(self, service, region=None):
        return backends.get_backend(service)[self.account][region or self.region]


def _caller(request):
    match = CREDENTIAL.search(request.headers.get("Authorization", ""))
    if match:
        return match.group(1), match.group(2)
    scope = request.args.get("X-Amz-Credential", "").split("/")
    if len(scope) >= 3:
        return scope[0], scope[2]
    return request.args.get("AWSAccessKeyId"), None


def check(action, resource="*", context=None):
    return {"action": action, "resource": resource, "context": context or {}}


def tag_dict(tags):
    if isinstance(tags, dict):
        return tags
    return {t.get("Key", t.get("key")): t.get("Value", t.get("value")) for t in tags or []}


def resource_tags(tags, *prefixes, key="ResourceTag"):
    return {f"{p}:{key}/{k}": [str(v)] for p in prefixes for k, v in tag_dict(tags).items()}


def request_tags(tags, keys=()):
    """aws:RequestTag/ and aws:TagKeys of a request's tags ([{Key, Value}] or a
    dict) and tag keys."""
    if isinstance(tags, dict):
        tags = [{"Key": k, "Value": v} for k, v in tags.items()]
    pairs = [(t["Key"], t.get("Value")) for t in tags or []] + [(k, None) for k in keys]
    context = {f"aws:RequestTag/{k}": [v] for k, v in pairs if v is not None}
    if pairs:
        context["aws:TagKeys"] = [k for k, _ in pairs]
    return context


@functools.cache
def _model(name):
    return utils.get_service_model(name)


def _body(request):
    """The request body, decompressed; moto still finds it as sent."""
    if request.content_encoding != "gzip":
        return request.get_data()
    raw = request.stream.read()
    request.stream = io.BytesIO(raw)
    return gzip.decompress(raw)


def _identify(call, service):
    request = call.request
    name = BOTOCORE_NAMES.get(service, service)
    s3 = name == "s3"
    body = b"" if s3 else _body(request)
    if not s3 and request.content_encoding == "gzip":
        dropped = ("content-encoding", "content-length")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        request = Request.from_primitives(request.method, request.raw_url, headers, body)
    if name == "elb" and request.values.get("Version") == "2015-12-01":
        name = "elbv2"
    call.service = PREFIXES.get(name, name)
    model = _model(name)
    protocol = determine_request_protocol(model, request.content_type)
    uri = {}
    if protocol in ("query", "ec2"):
        call.operation = request.values.get("Action")
    elif protocol == "json":
        call.operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
    elif protocol.startswith("rest"):
        operation, uri = routing.get_service_router(name).match(request)
        call.operation = operation.name
    elif "/operation/" in request.path:  # smithy-rpc-v2-cbor: /service/{Service}/operation/{Op}
        call.operation = request.path.rpartition("/operation/")[2]
    parser = parse.PROTOCOL_PARSERS.get(protocol)
    if not parser or call.operation not in model.operation_names:
        return
    if s3 and call.operation == "DeleteObjects":
        body = request.get_data()
    call.params = parser(model.operation_model(call.operation)).parse({
        "method": request.method, "values": request.args if s3 else request.values,
        "headers": request.headers, "body": body, "url_path": request.path, "url_params": uri,
    })


# S3: https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html
S3_ACTIONS = {
    **dict.fromkeys(("ListObjects", "ListObjectsV2", "HeadBucket"), "ListBucket"),
    **dict.fromkeys(("HeadObject", "GetObjectAttributes"), "GetObject"),
    **dict.fromkeys(
        ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"), "PutObject"
    ),
    "ListObjectVersions": "ListBucketVersions",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "ListParts": "ListMultipartUploadParts",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    **dict.fromkeys(
        ("PutBucketEncryption", "DeleteBucketEncryption"), "PutEncryptionConfiguration"
    ),
    "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
    **dict.fromkeys(
        ("PutBucketLifecycleConfiguration", "DeleteBucketLifecycle"), "PutLifecycleConfiguration"
    ),
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    **dict.fromkeys(
        ("PutPublicAccessBlock", "DeletePublicAccessBlock"), "PutBucketPublicAccessBlock"
    ),
    "GetBucketNotificationConfiguration": "GetBucketNotification",
    "PutBucketNotificationConfiguration": "PutBucketNotification",
    "GetBucketCors": "GetBucketCORS",
    **dict.fromkeys(("PutBucketCors", "DeleteBucketCors"), "PutBucketCORS"),
    "DeleteBucketTagging": "PutBucketTagging",
    "DeleteBucketOwnershipControls": "PutBucketOwnershipControls",
    "GetObjectLockConfiguration": "GetBucketObjectLockConfiguration",
    "PutObjectLockConfiguration": "PutBucketObjectLockConfiguration",
}
# With a versionId, each is its ...ObjectVersion... action.
S3_VERSIONED = {"GetObject", "DeleteObject", "GetObjectTagging", "PutObjectTagging",
                "DeleteObjectTagging", "GetObjectAcl", "PutObjectAcl"}
S3_LIST_KEYS = {"Prefix": "s3:prefix", "Delimiter": "s3:delimiter", "MaxKeys": "s3:max-keys"}
S3_HEADER_KEYS = ["x-amz-acl", "x-amz-metadata-directive",
                  "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                  "x-amz-storage-class"]


def _s3_arn(bucket, key=None):
    return f"arn:aws:s3:::{bucket}" + ("" if key is None else f"/{key}")


def _s3_object_tags(call, bucket, key, version):
    backend = call.backend("s3", "aws")
    found = backend.buckets.get(bucket)
    versions = found.keys.getlist(key, []) if found else []
    if version is not None:
        versions = [v for v in versions if str(v.version_id) == version]
    if not versions or not hasattr(versions[-1], "arn"):
        return {}
    return backend.tagger.get_tag_dict_for_resource(versions[-1].arn)


def _s3_written(call, resource, tagging):
    """The PutObject of a write, and its PutObjectTagging if it sets tags."""
    headers = call.request.headers
    context = {f"s3:{h}": [headers[h]] for h in S3_HEADER_KEYS if h in headers}
    if "x-amz-copy-source" in headers:  # as bucket/key, not URL-encoded
        source = headers["x-amz-copy-source"].lstrip("/").split("?")[0]
        context["s3:x-amz-copy-source"] = [unquote(source)]
    tags = parse_qsl(tagging or "", keep_blank_values=True)
    context.update({f"s3:RequestObjectTag/{k}": [v] for k, v in tags})
    if tags:
        context["s3:RequestObjectTagKeys"] = [k for k, _ in tags]
    checks = [check("s3:PutObject", resource, context)]
    if tagging:
        checks.append(check("s3:PutObjectTagging", resource, context))
    return checks


def _s3_copy(call):
    p = call.params
    source, _, query = p["CopySource"].lstrip("/").partition("?")
    version = dict(parse_qsl(query)).get("versionId")
    bucket, _, key = unquote(source).partition("/")
    read = check("s3:GetObjectVersion" if version else "s3:GetObject", _s3_arn(bucket, key),
                 {"s3:versionid": [version]} if version else {})
    destination = _s3_arn(p["Bucket"], p["Key"])
    if call.operation == "UploadPartCopy":
        return [read, check("s3:PutObject", destination)]
    if p.get("TaggingDirective", "COPY") == "REPLACE":
        return [read, *_s3_written(call, destination, p.get("Tagging"))]
    checks = [read, *_s3_written(call, destination, None)]
    # https://repost.aws/knowledge-center/s3-troubleshoot-copy-between-buckets
    if _s3_object_tags(call, bucket, key, version):
        tagging = "s3:GetObjectVersionTagging" if version else "s3:GetObjectTagging"
        checks += [check(tagging, read["resource"]), check("s3:PutObjectTagging", destination)]
    return checks


def _s3(call):
    p, op = call.params, call.operation
    if op == "ListBuckets":
        return [check("s3:ListAllMyBuckets")]
    if op in ("CopyObject", "UploadPartCopy"):
        return _s3_copy(call)
    if op == "DeleteObjects":
        objects = p.get("Delete", {}).get("Objects", [])
        return [check("s3:DeleteObjectVersion" if o.get("VersionId") else "s3:DeleteObject",
                      _s3_arn(p["Bucket"], o["Key"])) for o in objects]
    bucket, key, version = p.get("Bucket"), p.get("Key"), p.get("VersionId")
    resource = _s3_arn(bucket, key)
    if op == "PutObject":
        return _s3_written(call, resource, p.get("Tagging"))
    action = S3_ACTIONS.get(op, op)
    context = {k: [str(p[n])] for n, k in S3_LIST_KEYS.items() if n in p and key is None}
    if version:
        action = action.replace("Object", "ObjectVersion", 1) if action in S3_VERSIONED else action
        context["s3:versionid"] = [version]
    if key is not None and ("Get" in action or "Tagging" in action):
        tags = _s3_object_tags(call, bucket, key, version)
        context.update(resource_tags(tags, "s3", key="ExistingObjectTag"))
    checks = [check(f"s3:{action}", resource, context)]
    if op == "GetObjectAttributes":
        checks.append(check(f"s3:{action}Attributes", resource, context))
    return checks


def _ssm_document(call, name):
    if name.startswith("arn:"):
        return name
    # Amazon's own documents have no account in their ARN.
    amazons = name.startswith(("AWS-", "AWSEC2-", "AWSSupport-", "Amazon"))
    return call.arn("ssm", f"document/{name}", account="" if amazons else None)


def _ssm(call):
    p, op = call.params, call.operation
    if op == "SendCommand":
        document = _ssm_document(call, p.get("DocumentName", ""))
        instances = list(p.get("InstanceIds", []))
        for target in p.get("Targets", []):
            if target.get("Key") == "InstanceIds":
                instances += target.get("Values", [])
        tags = call.backend("ec2").tags
        return [check("ssm:SendCommand", document)] + [
            check("ssm:SendCommand", call.arn("ec2", f"instance/{i}"),
                  resource_tags(tags.get(i, {}), "ssm", key="resourceTag"))
            for i in instances
        ]
    names = p.get("Names") or [p[n] for n in ("Name", "Path") if n in p]
    if "Parameter" in op and names:
        return [check(f"ssm:{op}", n if n.startswith("arn:") else call.arn(
            "ssm", "parameter/" + n.lstrip("/").split(":")[0])) for n in names]
    if "Document" in op and "Name" in p:
        return [check(f"ssm:{op}", _ssm_document(call, p["Name"]))]
    return [check(f"ssm:{op}")]


EC2_KINDS = {"ami": "image", "snap": "snapshot", "i": "instance", "vol": "volume",
             "sg": "security-group", "subnet": "subnet", "vpc": "vpc", "eni": "network-interface",
             "lt": "launch-template", "igw": "internet-gateway", "rtb": "route-table",
             "eipalloc": "elastic-ip"}


def _ec2(call):
    p, op = call.params, call.operation
    tags = call.backend("ec2").tags

    def resource(rid, context=None):
        kind = rid.split("-")[0]
        if kind in ("ami", "snap"):  # public ones: no account
            arn = call.arn("ec2", f"{EC2_KINDS[kind]}/{rid}", account="")
        else:
            arn = call.arn("ec2", f"{EC2_KINDS.get(kind, 'resource')}/{rid}")
        context = {**(context or {}), **resource_tags(tags.get(rid, {}), "aws", "ec2")}
        if op in ("CreateTags", "DeleteTags"):
            context["aws:ARN"] = [arn]
        return check(f"ec2:{op}", arn, context)

    if op in ("CreateTags", "DeleteTags"):
        requested = request_tags(p.get("Tags"))
        return [resource(r, requested) for r in p.get("Resources", [])]
    ids = p.get("InstanceIds") or [p.get("InstanceId")]
    ids = [i for i in ids if isinstance(i, str)]
    if ids and not op.startswith("Describe"):
        return [resource(i) for i in ids]
    return [check(f"ec2:{op}")]


def _autoscaling(call):
    p, op = call.params, call.operation
    groups = call.backend("autoscaling").autoscaling_groups

    def group(name, context=None):
        found = groups.get(name)
        unmade = f"autoScalingGroup:*:autoScalingGroupName/{name}"
        arn = found.arn if found else call.arn("autoscaling", unmade)
        tags = resource_tags(found.tags if found else [], "aws", "autoscaling")
        return check(f"autoscaling:{op}", arn, {**(context or {}), **tags})

    if op == "CreateAutoScalingGroup":
        name = p["AutoScalingGroupName"]
        return [check(f"autoscaling:{op}", lambda: groups[name].arn, request_tags(p.get("Tags")))]
    if op in ("CreateOrUpdateTags", "DeleteTags"):
        names = dict.fromkeys(t["ResourceId"] for t in p.get("Tags", []))
        return [group(n, request_tags([t for t in p["Tags"] if t["ResourceId"] == n]))
                for n in names]
    name = p.get("AutoScalingGroupName")
    if "InstanceId" in p and not name:
        name = next((g.name for g in list(groups.values())
                     if any(s.instance.id == p["InstanceId"] for s in g.instance_states)), None)
    if name and not op.startswith("Describe"):
        return [group(name)]
    return [check(f"autoscaling:{op}")]


def _cloudformation(call):
    p, action = call.params, f"cloudformation:{call.operation}"
    backend = call.backend("cloudformation")
    name = p.get("StackName")
    if call.operation == "CreateStack":
        made = check(action, lambda: backend.get_stack(name).stack_id, request_tags(p.get("Tags")))
    elif name:
        try:
            stack = backend.get_stack(name)
            made = check(action, stack.stack_id, resource_tags(stack.tags, "aws"))
        except Exception:  # no such stack, so no stack id
            made = check(action, call.arn("cloudformation", f"stack/{name}/*"))
    else:
        made = check(action)
    role = p.get("RoleARN")
    if not role:
        return [made]
    made["context"]["cloudformation:RoleArn"] = [role]
    passed = {"iam:PassedToService": ["cloudformation.amazonaws.com"]}
    return [made, check("iam:PassRole", role, passed)]


LOG_STREAM_OPS = {"CreateLogStream", "DeleteLogStream", "GetLogEvents", "PutLogEvents"}


def _logs(call):
    p, op = call.params, call.operation
    name = p.get("logGroupName") or p.get("logGroupIdentifier")
    if not name or op == "DescribeLogGroups":
        return [check(f"logs:{op}")]
    group = name.split("log-group:")[-1].removesuffix(":*")
    arn = call.arn("logs", f"log-group:{name}")
    if name.startswith("arn:"):
        arn = name.removesuffix(":*")
    backend = call.backend("logs")
    found = backend.groups.get(group)
    context = resource_tags(backend.list_tags_for_resource(found.arn) if found else {}, "aws")
    if op == "CreateLogGroup":
        context = request_tags(p.get("tags"))
    if op in LOG_STREAM_OPS and "logStreamName" in p:
        arn += f":log-stream:{p['logStreamName']}"
    return [check(f"logs:{op}", arn, context)]


def _cloudwatch(call):
    p, op = call.params, call.operation
    if op == "PutMetricData" and "Namespace" in p:
        return [check("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": [p["Namespace"]]})]
    alarms = [p["AlarmName"]] if "AlarmName" in p else p.get("AlarmNames", [])
    if alarms and not op.startswith("Describe"):
        return [check(f"cloudwatch:{op}", call.arn("cloudwatch", f"alarm:{a}")) for a in alarms]
    return [check(f"cloudwatch:{op}")]


def _elasticloadbalancing(call):
    p, op = call.params, call.operation
    tagging = call.backend("elbv2").tagging_service
    named = ("ListenerArn", "RuleArn", "TargetGroupArn", "LoadBalancerArn")
    arns = p.get("ResourceArns") or [p[n] for n in named if n in p][:1]
    requested = request_tags(p.get("Tags"), p.get("TagKeys", []))
    if not arns or op.startswith("Describe"):
        return [check(f"elasticloadbalancing:{op}", "*", requested)]
    checks = [check(f"elasticloadbalancing:{op}", a, {**requested, **resource_tags(
        tagging.get_tag_dict_for_resource(a), "aws", "elasticloadbalancing")}) for a in arns]
    if op == "CreateRule" and p.get("Tags"):
        # Tagging a resource as it is made takes AddTags on it too, with
        # the creating action as elasticloadbalancing:CreateAction; its id
        # is not known yet, so the rule's ARN ends in a wildcard.
        rule = p["ListenerArn"].replace(":listener/", ":listener-rule/", 1) + "/*"
        checks.append(check("elasticloadbalancing:AddTags", rule, {
            **requested, "elasticloadbalancing:CreateAction": ["CreateRule"]}))
    return checks


def _sqs(call):
    p, op = call.params, call.operation
    if "QueueUrl" in p:
        account, _, name = urlparse(p["QueueUrl"]).path.strip("/").rpartition("/")
        return [check(f"sqs:{op}", call.arn("sqs", name, account=account or None))]
    if "QueueName" in p:
        return [check(f"sqs:{op}", call.arn("sqs", p["QueueName"]))]
    return [check(f"sqs:{op}")]


def _sts(call):
    if call.operation == "GetCallerIdentity":
        return []
    return [check(f"sts:{call.operation}", call.params.get("RoleArn", "*"))]


def _iam(call):
    p, op = call.params, call.operation
    backend = call.backend("iam", "global")

    def arn(kind, name, lookup):
        try:
            return lookup(name).arn
        except Exception:  # not made yet
            return call.arn("iam", f"{kind}{p.get('Path', '/')}{name}", region="")

    context = {}
    for name in ("PolicyARN", "PermissionsBoundary"):
        if name.replace("ARN", "Arn") in p and op != "GetPolicy":
            context[f"iam:{name}"] = [p[name.replace("ARN", "Arn")]]
    if op.startswith("Create"):
        context.update(request_tags(p.get("Tags")))
    role = arn("role", p["RoleName"], backend.get_role) if "RoleName" in p else None
    if "InstanceProfileName" in p:
        resource = arn("instance-profile", p["InstanceProfileName"], backend.get_instance_profile)
    elif role:
        resource = role
    elif "UserName" in p:
        resource = arn("user", p["UserName"], backend.get_user)
    else:
        resource = p.get("PolicyArn", "*")
    checks = [check(f"iam:{op}", resource, context)]
    if op == "AddRoleToInstanceProfile":
        checks.append(check("iam:PassRole", role))
    return checks


def _lambda(call):
    name = call.params.get("FunctionName")
    resource = "*" if not name else name if name.startswith("arn:") else call.arn(
        "lambda", f"function:{name}")
    return [check(f"lambda:{call.operation}", resource)]


SERVICES = {
    "s3": _s3, "ssm": _ssm, "ec2": _ec2, "autoscaling": _autoscaling, "logs": _logs,
    "cloudformation": _cloudformation, "cloudwatch": _cloudwatch, "sqs": _sqs, "sts": _sts,
    "elasticloadbalancing": _elasticloadbalancing, "iam": _iam, "lambda": _lambda,
}


def _begin():
    """The call's record, or None for a request that is not an AWS call."""
    service = getattr(current_app, "service", None)
    if service in NOT_AWS:
        return None
    record = {"key": None, "service": service, "operation": "?"}
    try:
        call = Call(normalize_request(flask_request))
        record["key"] = call.key
        _identify(call, service)
        if not call.operation:
            raise ValueError(f"no operation in {call.request.method} {call.request.path}")
        record.update(service=call.service, operation=call.operation)
        recorder = SERVICES.get(call.service, lambda c: [check(f"{c.service}:{c.operation}")])
        record["checks"] = recorder(call)
    except Exception as e:
        what = f"{record['service']} {record['operation']}: "
        record.update(operation="?", error=f"{what}{type(e).__name__}: {e}")
    return record


def _resolved(resource):
    try:
        resource = resource() if callable(resource) else resource
    except Exception:  # the call failed, so nothing was made
        resource = None
    return str(resource or "*")


def _finish(record, status, began):
    try:
        ms = round((time.perf_counter() - began) * 1000, 2)
        record = {"key": None, "operation": "?", **record, "status": status, "ms": ms}
        record["service"] = record.get("service") or ""
        for c in record.get("checks", []):
            c["resource"] = _resolved(c["resource"])
            c["context"] = {k: [str(v) for v in vs] for k, vs in c["context"].items()}
        record = {n: record[n] for n in ("key", "service", "operation", "status", "ms")} | record
        line = json.dumps(record)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        line = json.dumps({"key": record.get("key"), "operation": "?", "error": error})
    try:
        with _lock:
            _out.write(line + "\n")
            _out.flush()
    except OSError:  # the record is lost; the request is not
        pass


def _recording(original):
    def __call__(self, *args, **kwargs):
        began = time.perf_counter()
        record = _begin()
        status = 500
        try:
            response = original(self, *args, **kwargs)
            status = response.status_code
            return response
        except HTTPException as e:
            status = e.code
            raise
        finally:
            if record is not None:
                _finish(record, status, began)

    return __call__


def install() -> None:
    global _out
    path = os.environ.get("SLIPWAY_EMULATOR_CALLS")
    if not path:
        return
    _out = open(path, "a", encoding="utf-8")
    owner = utils.convert_to_flask_response
    owner.__call__ = _recording(owner.__call__)
