"""The embedded ingest (otactl.telemetry.ingest), run in-process with uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from otactl.errors import OtactlError
from otactl.fleet.entitlements import Signers
from otactl.telemetry.devices import DeviceRecordLike, DeviceRegistry
from otactl.telemetry.ingest import create_app
from otactl.telemetry.server import bind
from otactl.telemetry.store import ReportStore


@dataclass(frozen=True)
class RunningIngest:
    url: str
    store: ReportStore
    db: Path


@contextlib.contextmanager
def running_ingest(db: Path, devices: list[DeviceRecordLike], host: str = "127.0.0.1",
                   startup_timeout: float = 10.0, signers: Signers | None = None) -> Iterator[RunningIngest]:
    """``signers``: the repository's entitlement signers; then only records whose entitlement
    verifies are enrolled (decision 0406)."""
    import uvicorn

    store = ReportStore(db)
    sock = bind(host, 0)
    registry = DeviceRegistry(devices, signers=signers)
    config = uvicorn.Config(create_app(store, registry), log_level="warning", access_log=False,
                            server_header=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sim-ingest", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise OtactlError(f"the simulator's ingest did not start on {host}")
            time.sleep(0.01)
        port = sock.getsockname()[1]
        yield RunningIngest(f"http://{host}:{port}", store, db)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()
