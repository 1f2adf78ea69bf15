"""The WispHub sandbox: a WispHub-compatible HTTP server with demo data (see ``server``).

``server`` serves and records requests and injects faults, ``api`` holds the endpoints,
``wire`` DRF's answer shapes, ``faults`` and ``ping`` what they say, ``demo_data`` the tenant.
"""

from integrations.wisphub.sandbox.demo_data import demo_data
from integrations.wisphub.sandbox.server import (
    SANDBOX_API_KEY,
    RecordedRequest,
    Sandbox,
    running_sandbox,
    serve,
)

__all__ = [
    "SANDBOX_API_KEY",
    "RecordedRequest",
    "Sandbox",
    "demo_data",
    "running_sandbox",
    "serve",
]
