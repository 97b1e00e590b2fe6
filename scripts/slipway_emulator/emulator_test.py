"""What the emulator's own tests share: the emulator raised in this
process (patched as `scripts/emulator.py` patches it) on a free port, a
directory for its local hosts, and boto3 clients pointed at it.
"""

import logging
import os
import tempfile
import unittest

import boto3
from moto.server import ThreadedMotoServer

import slipway_emulator

KEY = "ASIATESTKEY"


class EmulatorTest(unittest.TestCase):
    # botocore Config for every client (None: boto3's defaults).
    CONFIG = None

    @classmethod
    def settings(cls, directory: str) -> dict:
        """Environment the emulator starts with, beside its hosts
        directory: a subclass's own."""
        return {}

    @classmethod
    def setUpClass(cls):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        cls.dir = tempfile.TemporaryDirectory()
        os.environ["SLIPWAY_EMULATOR_HOSTS"] = cls.dir.name
        os.environ.update(cls.settings(cls.dir.name))
        slipway_emulator.install()
        cls.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        cls.server.start()
        host, port = cls.server.get_host_and_port()
        cls.endpoint = f"http://{host}:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dir.cleanup()

    @classmethod
    def client(cls, service):
        return boto3.client(
            service,
            endpoint_url=cls.endpoint,
            region_name="us-east-1",
            config=cls.CONFIG,
            aws_access_key_id=KEY,
            aws_secret_access_key="secret",
        )
