"""S3 fault injection (faults.py) against a real emulator, over HTTP with boto3.

    .venv/bin/python -m unittest scripts/slipway_emulator/test_faults.py
"""

import json
import os
import sys
import unittest

import requests
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from slipway_emulator.emulator_test import EmulatorTest  # noqa: E402

# One attempt per call: every fault reaches the test.
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


class FaultsTest(EmulatorTest):
    CONFIG = NO_RETRIES

    @classmethod
    def settings(cls, directory):
        cls.calls = os.path.join(directory, "calls.jsonl")
        return {"SLIPWAY_EMULATOR_CALLS": cls.calls}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.faults = cls.endpoint + "/_slipway/faults"
        cls.s3 = cls.client("s3")
        cls.s3.create_bucket(Bucket="bkt")
        cls.s3.put_object(Bucket="bkt", Key="there", Body=b"x")

    def tearDown(self):
        self.set(0)

    def set(self, fraction, seed=None):
        response = requests.post(self.faults, json={"s3_slowdown": fraction, "seed": seed})
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()

    def state(self):
        response = requests.get(self.faults)
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()

    def slowed(self, call):
        """Whether call() was answered SlowDown; any other error fails."""
        try:
            call()
            return False
        except ClientError as e:
            self.assertEqual(e.response["Error"]["Code"], "SlowDown")
            self.assertEqual(e.response["ResponseMetadata"]["HTTPStatusCode"], 503)
            return True

    def pattern(self, n):
        return [self.slowed(lambda: self.s3.list_objects_v2(Bucket="bkt"))
                for _ in range(n)]

    def test_a_fraction_of_s3_only(self):
        self.assertEqual(self.set(0.2, seed=7),
                         {"s3_slowdown": 0.2, "seed": 7, "s3_requests": 0, "s3_injected": 0})
        slowed = sum(self.slowed(lambda: self.s3.list_objects_v2(Bucket="bkt"))
                     for _ in range(500))
        self.assertTrue(50 <= slowed <= 150, f"{slowed} of 500 slowed down")
        self.assertEqual(self.state(), {"s3_slowdown": 0.2, "seed": 7,
                                        "s3_requests": 500, "s3_injected": slowed})
        # Other services are never faulted, nor counted.
        sts, ssm = self.client("sts"), self.client("ssm")
        ssm.put_parameter(Name="/slipway/p", Value="1", Type="String", Overwrite=True)
        for _ in range(50):
            sts.get_caller_identity()
            ssm.get_parameter(Name="/slipway/p")
        self.assertEqual(self.state()["s3_requests"], 500)

    def test_a_seed_repeats(self):
        self.set(0.5, seed=11)
        first = self.pattern(40)
        self.set(0.5, seed=11)
        self.assertEqual(self.pattern(40), first)
        self.assertIn(True, first)
        self.assertIn(False, first)

    def test_the_error_as_s3_sends_it(self):
        self.set(1)
        url = f"{self.endpoint}/bkt/there"
        response = requests.get(url)
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.headers["Content-Type"], "application/xml")
        request_id = response.headers["x-amz-request-id"]
        self.assertEqual(response.text, (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            "<Message>Please reduce your request rate.</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"))
        head = requests.head(url)
        self.assertEqual((head.status_code, head.content), (503, b""))
        self.assertEqual(head.headers["Content-Type"], "application/xml")

    def test_a_faulted_request_does_not_run(self):
        self.set(1)
        self.assertTrue(self.slowed(
            lambda: self.s3.put_object(Bucket="bkt", Key="new", Body=b"y" * 100_000)))
        self.assertTrue(self.slowed(
            lambda: self.s3.put_object(Bucket="bkt", Key="there", Body=b"changed")))
        self.assertTrue(self.slowed(lambda: self.s3.delete_object(Bucket="bkt", Key="there")))
        self.assertTrue(self.slowed(lambda: self.s3.create_bucket(Bucket="other")))
        self.set(0)
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket="bkt")["Contents"]]
        self.assertEqual(keys, ["there"])
        self.assertEqual(self.s3.get_object(Bucket="bkt", Key="there")["Body"].read(), b"x")
        self.assertNotIn("other", [b["Name"] for b in self.s3.list_buckets()["Buckets"]])

    def test_zero_stops_it(self):
        self.set(0.2, seed=7)
        self.assertIn(True, self.pattern(100))
        self.assertEqual(self.set(0)["s3_slowdown"], 0)
        self.assertNotIn(True, self.pattern(200))
        self.assertEqual(self.state(), {"s3_slowdown": 0, "seed": None,
                                        "s3_requests": 200, "s3_injected": 0})

    def test_bad_settings(self):
        self.set(0.3, seed=1)
        for body in ['{"s3_slowdown": 1.5}', '{"s3_slowdown": -0.1}', '{"s3_slowdown": "0.2"}',
                     '{"s3_slowdown": true}', '{"s3_slowdown": NaN}', '{"seed": 7}', "[0.2]",
                     '{"s3_slowdown": 0.2, "seed": "7"}', '{"s3_slowdown": 0.2, "sead": 7}',
                     "0.2", "{", ""]:
            response = requests.post(self.faults, data=body,
                                     headers={"Content-Type": "application/json"})
            self.assertEqual(response.status_code, 400, body)
            self.assertIn("message", response.json())
        self.assertEqual(self.state(), {"s3_slowdown": 0.3, "seed": 1,
                                        "s3_requests": 0, "s3_injected": 0})
        self.assertEqual(requests.get(self.endpoint + "/_slipway/nothing").status_code, 404)

    def test_the_call_record(self):
        def lines():
            with open(self.calls) as f:
                return [json.loads(line) for line in f]

        self.set(1)
        before = len(lines())
        self.assertTrue(self.slowed(lambda: self.s3.get_object(Bucket="bkt", Key="there")))
        self.state()
        self.set(0)
        # The faulted call is recorded as answered; the control requests are not calls.
        recorded = lines()[before:]
        self.assertEqual([(c["operation"], c["status"]) for c in recorded], [("GetObject", 503)])
        self.assertEqual([c["action"] for c in recorded[0]["checks"]], ["s3:GetObject"])
        self.assertEqual([c for c in lines() if "error" in c], [])


if __name__ == "__main__":
    unittest.main()
