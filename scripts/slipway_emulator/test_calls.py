"""The call record (calls.py) against a real emulator, over HTTP with boto3.

    .venv/bin/python -m unittest scripts/slipway_emulator/test_calls.py
"""

import gzip
import json
import os
import sys
import unittest

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slipway_emulator.emulator_test import KEY, EmulatorTest  # noqa: E402

ACCOUNT = "123456789012"


class CallsTest(EmulatorTest):
    @classmethod
    def settings(cls, directory):
        cls.path = os.path.join(directory, "calls.jsonl")
        return {"SLIPWAY_EMULATOR_CALLS": cls.path}

    def last(self, operation):
        with open(self.path) as f:
            lines = [json.loads(line) for line in f]
        errors = [line for line in lines if "error" in line]
        self.assertEqual(errors, [])
        found = [line for line in lines if line["operation"] == operation]
        self.assertTrue(found, f"no {operation} in {lines}")
        self.assertEqual(found[-1]["key"], KEY)
        return found[-1]

    def checks(self, operation):
        return [(c["action"], c["resource"], c["context"]) for c in self.last(operation)["checks"]]

    def assertUnscoped(self, operation, action):
        self.assertEqual(self.checks(operation), [(action, "*", {})])

    def test_s3(self):
        s3 = self.client("s3")
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="src key", Body=b"x", Tagging="t=1")
        self.assertEqual(self.checks("PutObject"), [
            ("s3:PutObject", "arn:aws:s3:::bkt/src key",
             {"s3:RequestObjectTag/t": ["1"], "s3:RequestObjectTagKeys": ["t"]}),
            ("s3:PutObjectTagging", "arn:aws:s3:::bkt/src key",
             {"s3:RequestObjectTag/t": ["1"], "s3:RequestObjectTagKeys": ["t"]}),
        ])
        s3.list_objects_v2(Bucket="bkt", Prefix="p/")
        self.assertEqual(self.checks("ListObjectsV2"),
                         [("s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": ["p/"]})])
        self.assertEqual(self.last("ListObjectsV2")["service"], "s3")
        self.assertEqual(self.last("ListObjectsV2")["status"], 200)

        s3.copy_object(Bucket="bkt", Key="dst", CopySource={"Bucket": "bkt", "Key": "src key"},
                       TaggingDirective="REPLACE", Tagging="k=v")
        actions = [(a, r) for a, r, _ in self.checks("CopyObject")]
        self.assertEqual(actions, [
            ("s3:GetObject", "arn:aws:s3:::bkt/src key"),
            ("s3:PutObject", "arn:aws:s3:::bkt/dst"),
            ("s3:PutObjectTagging", "arn:aws:s3:::bkt/dst"),
        ])
        s3.copy_object(Bucket="bkt", Key="dst2", CopySource={"Bucket": "bkt", "Key": "src key"})
        actions = [(a, r) for a, r, _ in self.checks("CopyObject")]
        self.assertEqual(actions, [
            ("s3:GetObject", "arn:aws:s3:::bkt/src key"),
            ("s3:PutObject", "arn:aws:s3:::bkt/dst2"),
            ("s3:GetObjectTagging", "arn:aws:s3:::bkt/src key"),
            ("s3:PutObjectTagging", "arn:aws:s3:::bkt/dst2"),
        ])
        s3.head_object(Bucket="bkt", Key="dst")
        self.assertEqual(self.checks("HeadObject"), [
            ("s3:GetObject", "arn:aws:s3:::bkt/dst", {"s3:ExistingObjectTag/k": ["v"]})])
        s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "dst"}, {"Key": "dst2"}]})
        self.assertEqual([(a, r) for a, r, _ in self.checks("DeleteObjects")], [
            ("s3:DeleteObject", "arn:aws:s3:::bkt/dst"), ("s3:DeleteObject", "arn:aws:s3:::bkt/dst2")])

        url = s3.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "up/pre signed"})
        self.assertEqual(requests.put(url, data=b"y").status_code, 200)
        self.assertEqual(self.checks("PutObject"), [("s3:PutObject", "arn:aws:s3:::bkt/up/pre signed", {})])
        with self.assertRaises(Exception):
            s3.get_object(Bucket="bkt", Key="missing")
        self.assertEqual(self.last("GetObject")["status"], 404)

    def instance(self, tags):
        ec2 = self.client("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        return ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]

    def test_ec2_create_tags(self):
        instance = self.instance([{"Key": "k", "Value": "old"}])
        self.client("ec2").create_tags(Resources=[instance], Tags=[{"Key": "k", "Value": "new"}])
        arn = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{instance}"
        self.assertEqual(self.checks("CreateTags"), [("ec2:CreateTags", arn, {
            "aws:ARN": [arn], "aws:TagKeys": ["k"], "aws:RequestTag/k": ["new"],
            "aws:ResourceTag/k": ["old"], "ec2:ResourceTag/k": ["old"],
        })])
        self.assertUnscoped("DescribeImages", "ec2:DescribeImages")

    def test_autoscaling(self):
        autoscaling = self.client("autoscaling")
        autoscaling.create_launch_configuration(LaunchConfigurationName="lc", ImageId="ami-12c6146b",
                                                InstanceType="t3.micro")
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="g", LaunchConfigurationName="lc", MinSize=0, MaxSize=1,
            DesiredCapacity=0, AvailabilityZones=["us-east-1a"],
            Tags=[{"Key": "slipway:app", "Value": "hello", "PropagateAtLaunch": True}],
        )
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["g"])["AutoScalingGroups"][0]
        self.assertEqual(self.checks("CreateAutoScalingGroup"), [
            ("autoscaling:CreateAutoScalingGroup", group["AutoScalingGroupARN"],
             {"aws:RequestTag/slipway:app": ["hello"], "aws:TagKeys": ["slipway:app"]})])
        autoscaling.update_auto_scaling_group(AutoScalingGroupName="g", MaxSize=2)
        self.assertEqual(self.checks("UpdateAutoScalingGroup"), [
            ("autoscaling:UpdateAutoScalingGroup", group["AutoScalingGroupARN"],
             {"aws:ResourceTag/slipway:app": ["hello"], "autoscaling:ResourceTag/slipway:app": ["hello"]})])
        self.assertUnscoped("DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingGroups")

    def test_ssm(self):
        instance = self.instance([{"Key": "slipway:app", "Value": "hello"}])
        ssm = self.client("ssm")
        ssm.create_document(Name="deploy", DocumentType="Command", Content=json.dumps({
            "schemaVersion": "2.2", "description": "d",
            "mainSteps": [{"action": "aws:runShellScript", "name": "run",
                           "inputs": {"runCommand": ["true"]}}],
        }))
        with self.assertRaises(Exception):  # not a managed node: no local host registered it
            ssm.send_command(DocumentName="deploy", InstanceIds=[instance])
        self.assertEqual(self.last("SendCommand")["status"], 400)
        self.assertEqual(self.checks("SendCommand"), [
            ("ssm:SendCommand", f"arn:aws:ssm:us-east-1:{ACCOUNT}:document/deploy", {}),
            ("ssm:SendCommand", f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{instance}",
             {"ssm:resourceTag/slipway:app": ["hello"]}),
        ])
        ssm.put_parameter(Name="/slipway/a", Value="1", Type="String")
        ssm.get_parameters(Names=["/slipway/a", "b"])
        self.assertEqual([(a, r) for a, r, _ in self.checks("GetParameters")], [
            ("ssm:GetParameters", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/slipway/a"),
            ("ssm:GetParameters", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/b"),
        ])
        ssm.describe_instance_information()
        self.assertUnscoped("DescribeInstanceInformation", "ssm:DescribeInstanceInformation")

    def test_logs(self):
        logs = self.client("logs")
        logs.create_log_group(logGroupName="/slipway/hello", tags={"slipway:app": "hello"})
        logs.filter_log_events(logGroupName="/slipway/hello")
        self.assertEqual(self.checks("FilterLogEvents"), [
            ("logs:FilterLogEvents", f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/slipway/hello",
             {"aws:ResourceTag/slipway:app": ["hello"]})])

    def test_cloudformation(self):
        cloudformation = self.client("cloudformation")
        group = {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "cfn"}}
        template = {"Resources": {"Group": group}}
        stack = cloudformation.create_stack(StackName="env", TemplateBody=json.dumps(template),
                                            Tags=[{"Key": "slipway:app", "Value": "hello"}])["StackId"]
        self.assertEqual(self.checks("CreateStack")[0][:2], ("cloudformation:CreateStack", stack))
        cloudformation.describe_stack_resources(StackName="env")
        self.assertEqual(self.checks("DescribeStackResources"), [
            ("cloudformation:DescribeStackResources", stack, {"aws:ResourceTag/slipway:app": ["hello"]})])

    def test_others(self):
        self.client("sts").get_caller_identity()
        self.assertEqual(self.checks("GetCallerIdentity"), [])
        self.assertEqual(self.last("GetCallerIdentity")["service"], "sts")
        self.client("elbv2").describe_target_groups()
        self.assertEqual(self.last("DescribeTargetGroups")["service"], "elasticloadbalancing")
        self.assertUnscoped("DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroups")
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="m")
        self.assertEqual(self.checks("SendMessage"),
                         [("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:q", {})])
        # Large enough for botocore to gzip it: moto must still read it.
        data = [{"MetricName": f"m{i}", "Value": 1.0} for i in range(400)]
        self.client("cloudwatch").put_metric_data(Namespace="Slipway", MetricData=data)
        record = self.last("PutMetricData")
        self.assertEqual((record["service"], record["status"]), ("cloudwatch", 200))
        self.assertEqual(self.checks("PutMetricData"),
                         [("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": ["Slipway"]})])
        metrics = self.client("cloudwatch").list_metrics(Namespace="Slipway")["Metrics"]
        self.assertEqual(len(metrics), 400)

    def test_gzipped_query(self):
        # The Rust SDK sends PutMetricData as a gzipped awsQuery form.
        form = "Action=PutMetricData&Version=2010-08-01&Namespace=Gz" + "".join(
            f"&MetricData.member.{i}.MetricName=m{i}&MetricData.member.{i}.Value=1" for i in range(1, 301))
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
        request = AWSRequest("POST", self.endpoint + "/", data=gzip.compress(form.encode()), headers=headers)
        SigV4Auth(Credentials(KEY, "secret"), "monitoring", "us-east-1").add_auth(request)
        response = requests.post(request.url, data=request.body, headers=dict(request.headers))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.checks("PutMetricData"),
                         [("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": ["Gz"]})])
        metrics = self.client("cloudwatch").list_metrics(Namespace="Gz")["Metrics"]
        self.assertEqual(len(metrics), 300)


if __name__ == "__main__":
    unittest.main()
