"""Serve the ingest app with uvicorn: one process, or several worker processes on one socket.

With a shard (``--shard I/N``, decision 0207) the ingest enrols only the devices of its shard and
refuses the others' reports (``wrong_shard``); each shard has its own database and machine.

Every worker opens the same SQLite database; all ingest state (last seqs, aggregates, refusal
counts) lives there and the replay check runs inside a ``BEGIN IMMEDIATE`` transaction, so workers
never disagree. The parent binds the socket (a busy port is one clear error), creates the schema,
then supervises: SIGTERM/SIGINT stop every worker gracefully; a worker that dies stops them all.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from otactl.errors import InputFileError, OtactlError
from otactl.fleet.entitlements import Signers
from otactl.telemetry.devices import DeviceRegistry, load_registry
from otactl.telemetry.ingest import IngestLimits, create_app
from otactl.telemetry.shards import Shard
from otactl.telemetry.store import ReportStore

STOP_TIMEOUT_S = 30


def bind(host: str, port: int) -> socket.socket:
    """Listen before uvicorn starts, so a busy port is one clear error, not a log line and exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise OtactlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def load_enrolment(devices: Path, entitlement_signers: Path | None, shard: Shard | None = None) -> DeviceRegistry:
    """The registry from the devices file; with the repository's entitlement signers (a copy of
    ``entitlements/signers.json``, decision 0406), only records whose entitlement verifies; with a
    shard, only that shard's devices (so its ``otactl_devices_enrolled`` sums with the others')."""
    signers = None
    if entitlement_signers is not None:
        try:
            data = entitlement_signers.read_bytes()
        except OSError as exc:
            raise InputFileError(str(entitlement_signers), f"cannot read the entitlement signers: {exc}") from None
        signers = Signers.from_bytes(data, str(entitlement_signers))
    registry = load_registry(devices, signers)
    if shard is None:
        return registry
    return registry.subset(shard.holds)


def _run_one(
    sock: socket.socket, db: Path, devices: Path, limits: IngestLimits, log_level: str, supervised: bool = False,
    entitlement_signers: Path | None = None, shard: Shard | None = None,
) -> None:
    """One uvicorn server on ``sock`` until SIGINT/SIGTERM (uvicorn re-raises it after shutting down)."""
    import uvicorn

    if supervised:
        os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only, which stops workers once

    registry = load_enrolment(devices, entitlement_signers, shard)
    store = ReportStore(db)
    try:
        app = create_app(store, registry, limits=limits, close_store_on_shutdown=True, shard=shard)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def serve(
    db: Path,
    devices: Path,
    host: str,
    port: int,
    *,
    workers: int = 1,
    limits: IngestLimits = IngestLimits(),
    log_level: str = "info",
    ready: Callable[[str], None] | None = None,
    entitlement_signers: Path | None = None,
    warn: Callable[[str], None] | None = None,
    shard: Shard | None = None,
) -> None:
    """Run the ingest until SIGINT/SIGTERM."""
    if workers < 1:
        raise OtactlError(f"--workers must be at least 1, not {workers}")
    registry = load_enrolment(devices, entitlement_signers, shard)  # a bad file: one clear error before listening
    if registry.refused and warn is not None:
        for refused in registry.refused[:10]:
            warn(str(refused))
        warn(f"{len(registry.refused)} of {len(registry) + len(registry.refused)} device records not enrolled "
             "(their entitlement does not verify); their reports will be refused")
    store = ReportStore(db)  # the schema exists before any worker opens the database
    try:
        store.claim_shard(None if shard is None else str(shard))
    finally:
        store.close()
    sock = bind(host, port)
    if ready is not None:
        ready(url_of(sock))
    if workers == 1:
        _run_one(sock, db, devices, limits, log_level, entitlement_signers=entitlement_signers, shard=shard)
        return
    _supervise(workers, sock, db, devices, limits, log_level, entitlement_signers, shard)


def _supervise(
    workers: int, sock: socket.socket, db: Path, devices: Path, limits: IngestLimits, log_level: str,
    entitlement_signers: Path | None = None, shard: Shard | None = None,
) -> None:
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    procs = [
        spawn.Process(target=_run_one,
                      args=(sock, db, devices, limits, log_level, True, entitlement_signers, shard),
                      name=f"ingest-{i}")
        for i in range(workers)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker's uvicorn shuts down gracefully

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.start()
        sock.close()  # the workers hold it now
        while not stopping and all(p.is_alive() for p in procs):
            multiprocessing.connection.wait([p.sentinel for p in procs])
        stop(signal.SIGTERM, None)
        for p in procs:
            p.join(STOP_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [p for p in procs if p.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stopping:
        raise OtactlError(f"ingest worker {failed[0].name} exited with code {failed[0].exitcode}")
