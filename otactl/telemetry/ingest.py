"""The embedded ingest: an ASGI app (Starlette) served by uvicorn.

    POST /v1/reports   {"reports": [<envelope>, ...]} -> per-report accept/refuse results
    GET  /metrics      Prometheus exposition of the store's aggregates (see metrics.py)
    GET  /healthz      200 when the store answers (with its shard, "I/N", when it is one)

A refused report never reaches the store; it is counted by reason
(``otactl_reports_rejected_total``).
A whole request is refused (and counted once) when its body is over the limit (413, oversized) or
is not a batch (400, malformed). A store failure answers 503 and stores nothing: devices retry.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otactl.errors import StoreError
from otactl.telemetry.checks import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_PAYLOAD_BYTES,
    Refused,
    ReportVerifier,
    Verified,
)
from otactl.telemetry.devices import DeviceRegistry
from otactl.telemetry.report import Refusal
from otactl.telemetry.shards import Shard
from otactl.telemetry.store import ReportStore

RESULTS_SCHEMA = "otactl/report-results/1"
log = logging.getLogger("otactl.telemetry.ingest")


@dataclass(frozen=True)
class IngestLimits:
    max_body_bytes: int = 1 << 20
    max_reports: int = 1000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ingest:
    """Admission of one request's batch; synchronous, run in a worker thread per request."""

    def __init__(
        self,
        store: ReportStore,
        registry: DeviceRegistry,
        *,
        limits: IngestLimits = IngestLimits(),
        clock: Callable[[], datetime] = utc_now,
        shard: Shard | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.limits = limits
        self.clock = clock
        self.shard = shard
        self.verifier = ReportVerifier(
            registry, max_payload_bytes=limits.max_payload_bytes, clock_skew=limits.clock_skew, shard=shard
        )

    def refuse_request(self, status: int, reason: Refusal, detail: str) -> tuple[int, dict[str, Any]]:
        try:
            self.store.count_refusals({reason: 1})
        except StoreError as err:
            log.error("cannot count a refused request: %s", err)
        return status, {"schema": RESULTS_SCHEMA, "error": reason.value, "detail": detail}

    def submit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return self.refuse_request(400, Refusal.MALFORMED, "the body is not JSON")
        if not isinstance(doc, dict) or set(doc) != {"reports"} or not isinstance(doc["reports"], list):
            detail = 'the body must be {"reports": [...]}'
            return self.refuse_request(400, Refusal.MALFORMED, detail)
        envelopes = doc["reports"]
        if len(envelopes) > self.limits.max_reports:
            return self.refuse_request(
                413, Refusal.OVERSIZED,
                f"{len(envelopes)} reports in one batch, over {self.limits.max_reports}",
            )  # fmt: skip
        now = self.clock()
        checked = [self.verifier.check(raw, now) for raw in envelopes]
        verified = [c for c in checked if isinstance(c, Verified)]
        refusals = Counter(c.reason for c in checked if isinstance(c, Refused))
        try:
            stored = iter(self.store.ingest(verified, now, refusals))
        except StoreError as err:
            log.error("store failed; %d reports not stored: %s", len(envelopes), err)
            return 503, {"schema": RESULTS_SCHEMA, "error": "unavailable", "detail": "store failed"}
        results: list[dict[str, Any]] = []
        accepted = 0
        for index, outcome in enumerate(checked):
            refused = outcome if isinstance(outcome, Refused) else next(stored)
            if refused is None:
                accepted += 1
                results.append({"index": index, "status": "accepted"})
            else:
                results.append({
                    "index": index, "status": "refused", "reason": refused.reason.value,
                    "detail": refused.detail,
                })  # fmt: skip
        return 200, {
            "schema": RESULTS_SCHEMA,
            "accepted": accepted,
            "refused": len(checked) - accepted,
            "results": results,
        }


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    store: ReportStore,
    registry: DeviceRegistry,
    *,
    limits: IngestLimits = IngestLimits(),
    clock: Callable[[], datetime] = utc_now,
    close_store_on_shutdown: bool = False,
    shard: Shard | None = None,
) -> Starlette:
    """The ingest app. With ``close_store_on_shutdown`` the server's graceful shutdown closes the store.
    With ``shard``, it admits only the reports of that shard's devices (the others: ``wrong_shard``)."""
    ingest = Ingest(store, registry, limits=limits, clock=clock, shard=shard)

    async def post_reports(request: Request) -> Response:
        body = await read_limited(request, limits.max_body_bytes)
        if body is None:
            detail = f"the body is over {limits.max_body_bytes} bytes"
            status, doc = await run_in_threadpool(ingest.refuse_request, 413, Refusal.OVERSIZED, detail)
        else:
            status, doc = await run_in_threadpool(ingest.submit, body)
        return JSONResponse(doc, status_code=status)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        from otactl.telemetry.metrics import exposition

        try:
            data = await run_in_threadpool(exposition, store, registry)
        except StoreError as err:
            log.error("metrics: %s", err)
            return Response("store unavailable\n", status_code=503, media_type="text/plain")
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(store.ping)
        except StoreError:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        health: dict[str, object] = {"status": "ok", "devices": len(registry)}
        if shard is not None:
            health["shard"] = str(shard)  # the router checks it is the shard it thinks
        return JSONResponse(health)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_store_on_shutdown:
            store.close()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/reports", post_reports, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
    )
    app.state.ingest = ingest
    return app
