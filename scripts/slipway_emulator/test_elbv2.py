"""The local load balancer (elbv2.py) against a real emulator, over HTTP.

    .venv/bin/python -m unittest scripts/slipway_emulator/test_elbv2.py

A deploy waits for a target to leave the load balancer (deregistered and
drained) and then stops its app: any request the load balancer has already
sent that target's way must hold the deregistration up, or it reaches a
stopped app and the client sees a 502.
"""

import http.client
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

    def serving(self, name, draining_seconds=None):
        """A load balancer forwarding to one healthy local target: the
        load balancer, its listener's ARN, the group, the instance, the
        app."""
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
        self.addCleanup(app.server_close)
        self.addCleanup(app.shutdown)
        group = elb.create_target_group(
            Name=name, Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="instance",
            HealthCheckPath="/", HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
        )["TargetGroups"][0]["TargetGroupArn"]
        if draining_seconds is not None:
            elb.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(draining_seconds)}])
        lb = elb.create_load_balancer(Name=name, Subnets=subnets, Type="application")[
            "LoadBalancers"
        ][0]
        listener = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
        )["Listeners"][0]["ListenerArn"]
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": instance}])
        started = time.monotonic()
        while self.health(elb, group).get(instance) != "healthy":
            self.assertLess(time.monotonic() - started, 10, self.health(elb, group))
            time.sleep(0.05)
        return lb, listener, group, instance, app

    def get(self, lb, path="/", source="127.0.0.1", host=None):
        """A request from `source` (any loopback address reaches the load
        balancer's): status, headers, body."""
        address, port = lb["DNSName"].split(":")
        conn = http.client.HTTPConnection(address, int(port), timeout=10,
                                          source_address=(source, 0))
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        answer = (response.status, dict(response.getheaders()), response.read().decode())
        conn.close()
        return answer

    def test_a_fixed_response_rule_answers_everyone_but_its_allowed_sources(self):
        elb = self.client("elbv2")
        lb, listener, *_ = self.serving("maintained")
        page = "<h1>Down for maintenance</h1>"
        fixed = {"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "503", "ContentType": "text/html", "MessageBody": page}}
        forward = elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"]
        # The team's address still reaches the app (the higher priority);
        # everyone else gets the page.
        elb.create_rule(ListenerArn=listener, Priority=1, Actions=forward, Conditions=[
            {"Field": "source-ip", "SourceIpConfig": {"Values": ["127.0.0.2/32"]}}])
        rule = elb.create_rule(ListenerArn=listener, Priority=2, Actions=[fixed], Conditions=[
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["*"]}}])["Rules"][0]

        status, headers, body = self.get(lb)
        self.assertEqual((status, headers["Content-Type"], body), (503, "text/html", page))
        self.assertEqual(self.get(lb, source="127.0.0.2")[::2], (200, "ok\n"))

        elb.delete_rule(RuleArn=rule["RuleArn"])
        self.assertEqual(self.get(lb)[::2], (200, "ok\n"))

    def test_rules_meet_a_request_in_priority_order_with_albs_wildcards(self):
        elb = self.client("elbv2")
        lb, listener, *_ = self.serving("routed")

        def fixed(text):
            return [{"Type": "fixed-response", "FixedResponseConfig": {
                "StatusCode": "200", "MessageBody": text}}]

        # Created out of order: priority decides, not creation.
        elb.create_rule(ListenerArn=listener, Priority=20, Actions=fixed("any api"), Conditions=[
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}])
        elb.create_rule(ListenerArn=listener, Priority=10, Actions=fixed("v1"), Conditions=[
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/v?/*"]}},
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["*.EXAMPLE.com"]}}])
        elb.create_rule(ListenerArn=listener, Priority=30, Actions=[{
            "Type": "redirect", "RedirectConfig": {
                "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}], Conditions=[
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/secure*"]}}])

        self.assertEqual(self.get(lb, "/api/v1/x", host="app.example.com")[2], "v1")
        # Both conditions must match: another host falls to the next rule.
        self.assertEqual(self.get(lb, "/api/v1/x", host="other.org")[2], "any api")
        self.assertEqual(self.get(lb, "/api/v12/x", host="app.example.com")[2], "any api")
        status, headers, _ = self.get(lb, "/secure/page?a=1", host="app.example.com:80")
        self.assertEqual(
            (status, headers["Location"]), (301, "https://app.example.com/secure/page?a=1")
        )
        self.assertEqual(self.get(lb, "/elsewhere")[::2], (200, "ok\n"))

    def test_a_request_sent_to_a_target_holds_up_its_deregistration(self):
        elb = self.client("elbv2")
        lb, _, group, instance, app = self.serving("web", draining_seconds=150)

        # The load balancer chooses the target for a request, and is slow
        # to send it on (a busy machine): meanwhile the target is
        # deregistered.
        chosen, original = threading.Event(), elbv2.routable

        def slow_routable(groups):
            targets = original(groups)
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
