"""The emulator's clock: how much faster than AWS its times run.

Load balancer probes and draining, Auto Scaling health checks and grace
periods, and SSM delivery timeouts are AWS's times multiplied by
SLIPWAY_EMULATOR_TIME_SCALE (1 for `ship dev`; tests make it small).
"""

import os


def scale() -> float:
    try:
        return max(float(os.environ.get("SLIPWAY_EMULATOR_TIME_SCALE", "1")), 0.001)
    except ValueError:
        return 1.0
