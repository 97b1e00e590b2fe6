"""Runs the AWS emulator (moto server) on a free loopback port for as long as
its parent keeps our stdin open.

Prints one line, `READY <port>`, once the server accepts connections. When
the parent exits (even by a crash or SIGKILL), the pipe on stdin closes and
the emulator stops with it, so no test run ever leaks a server.

moto is raised to AWS's behaviour first where the platform needs it
(`slipway_emulator`), failing at start if the pinned moto does not fit.
"""

import sys

from moto.server import ThreadedMotoServer

import slipway_emulator


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    slipway_emulator.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _, bound = server.get_host_and_port()
    print(f"READY {bound}", flush=True)
    sys.stdin.read()  # blocks until the parent goes away
    server.stop()


if __name__ == "__main__":
    main()
