"""The local load balancer (elbv2.py) against a real emulator, over HTTP.

    .venv/bin/python -m unittest scripts/slipway_emulator/test_elbv2.py

A deploy waits for a target to leave the load balancer (deregistered and
drained) and then stops its app: any request the load balancer has already
sent that target's way must hold the deregistration up, or it reaches a
stopped app and the client sees a 502.
"""

import http.server
import json
import os
import sys
import threading
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slipway_emulator.emulator_test import EmulatorTest  # noqa: E402
from slipway_emulator import elbv2  # noqa: E402


class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(0.5)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class LoadBalancerTest(EmulatorTest):
    @classmethod
    def settings(cls, directory):
        # Probes every 0.1 s, healthy after two; 3 s of draining at most.
        return {"SLIPWAY_EMULATOR_TIME_SCALE": "0.02"}

    def app(self, instance_id):
        """A local host serving `instance_id`'s target: its server."""
        app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
        threading.Thread(target=app.serve_forever, daemon=True).start()
        with open(os.path.join(self.dir.name, f"{instance_id}.json"), "w") as f:
            json.dump({"port": app.server_address[1]}, f)
        return app

    def health(self, elb, group):
        described = elb.describe_target_health(TargetGroupArn=group)
        return {
            d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in described["TargetHealthDescriptions"]
        }

    def test_a_request_sent_to_a_target_holds_up_its_deregistration(self):
        ec2, elb = self.client("ec2"), self.client("elbv2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)[
                "Subnet"
            ]["SubnetId"]
            for i, zone in enumerate(["us-east-1a", "us-east-1b"])
        ]
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        app = self.app(instance)
        group = elb.create_target_group(
            Name="web",
            Protocol="HTTP",
            Port=8000,
            VpcId=vpc,
            TargetType="instance",
            HealthCheckPath="/",
            HealthCheckIntervalSeconds=5,
            HealthyThresholdCount=2,
        )["TargetGroups"][0]["TargetGroupArn"]
        elb.modify_target_group_attributes(
            TargetGroupArn=group,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "150"}],
        )
        lb = elb.create_load_balancer(Name="web", Subnets=subnets, Type="application")[
            "LoadBalancers"
        ][0]
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
        )
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": instance}])
        started = time.monotonic()
        while self.health(elb, group).get(instance) != "healthy":
            self.assertLess(time.monotonic() - started, 10, self.health(elb, group))
            time.sleep(0.05)

        # The load balancer chooses the target for a request, and is slow
        # to send it on (a busy machine): meanwhile the target is
        # deregistered.
        chosen, original = threading.Event(), elbv2.routable

        def slow_routable(backend, balancer):
            targets = original(backend, balancer)
            chosen.set()
            time.sleep(0.3)
            return targets

        elbv2.routable = slow_routable
        self.addCleanup(setattr, elbv2, "routable", original)
        answers = []
        request = threading.Thread(
            target=lambda: answers.append(requests.get(f"http://{lb['DNSName']}/slow", timeout=10))
        )
        request.start()
        self.assertTrue(chosen.wait(5), "the load balancer never chose a target")
        elb.deregister_targets(TargetGroupArn=group, Targets=[{"Id": instance}])
        elbv2.routable = original

        # As a deploy does: once the target has left, its app stops.
        states = []
        while instance in (now := self.health(elb, group)):
            states.append(now[instance])
            time.sleep(0.01)
        app.shutdown()
        app.server_close()
        request.join(10)
        self.assertEqual([a.status_code for a in answers], [200])
        self.assertIn("draining", states, "the request in flight held it up")


if __name__ == "__main__":
    unittest.main()
