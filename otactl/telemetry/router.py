"""`otactl telemetry route`: one address in front of ingest shards (decision 0207).

    POST /v1/reports   split the batch by device shard (shards.py), forward each part to its shard
                       at once, answer the per-report results in the batch's order
    GET  /healthz      every shard's /healthz: 200 when all answer and each is the shard it should be
    GET  /metrics      the router's own counters (requests refused whole, reports forwarded, shard
                       failures); the gate inputs come from the shards' /metrics, summed by Prometheus

The router holds no state: replay protection and every count live in the shards' databases, so
several routers may stand behind one name, and any L7 balancer that routes by device id may replace
it. A request is refused whole as the ingest refuses it (413 over the body limit or the report
limit, 400 not a batch), before anything is forwarded. When a shard cannot take its part
(unreachable, timed out, not 200, a bad answer), the request answers 503 with every report's result,
``"status": "unavailable"`` for that part's: the device sends those again, and what the other shards
stored is refused as ``replayed`` if it is sent again, never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otactl.errors import UsageError
from otactl.telemetry import shards
from otactl.telemetry.ingest import RESULTS_SCHEMA, IngestLimits, read_limited
from otactl.telemetry.report import Refusal
from otactl.telemetry.shards import Shard

log = logging.getLogger("otactl.telemetry.router")
HEALTH_TIMEOUT_S = 5.0


def parse_shard_urls(specs: Sequence[str]) -> tuple[str, ...]:
    """The shards' base URLs in shard order, checked: http(s), a host, no query; no URL twice."""
    if not specs:
        raise UsageError("--shard: give each shard's URL, in shard order (at least one)")
    if len(specs) > shards.MAX_SHARDS:
        raise UsageError(f"--shard: at most {shards.MAX_SHARDS} shards, not {len(specs)}")
    urls: list[str] = []
    for spec in specs:
        try:
            url = httpx.URL(spec.strip())
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise UsageError(f"--shard {spec!r}: not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise UsageError(f"--shard {spec!r}: expected a shard's base URL like http://10.0.0.1:8787")
        if url.query or url.fragment:
            raise UsageError(f"--shard {spec!r}: a shard's base URL has no query or fragment")
        base = str(url).rstrip("/")
        if base in urls:
            raise UsageError(f"--shard {spec!r}: given twice (shard {urls.index(base)} and {len(urls)}); "
                             "each shard is its own ingest")  # fmt: skip
        urls.append(base)
    return tuple(urls)


def _display(url: str) -> str:
    return str(httpx.URL(url).copy_with(username=None, password=None))


def _body(envelopes: list[object]) -> bytes:
    doc = {"reports": envelopes}
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate in some payload: escaped, for its shard to refuse
        return json.dumps(doc, separators=(",", ":")).encode()


class Router:
    """Forwards the parts of each batch to their shards; ``client`` is any httpx.AsyncClient."""

    def __init__(self, urls: Sequence[str], client: httpx.AsyncClient, *,
                 limits: IngestLimits = IngestLimits()) -> None:  # fmt: skip
        if not urls:
            raise ValueError("a router needs at least one shard")
        self.urls = tuple(urls)
        self.shards = tuple(Shard(i, len(urls)) for i in range(len(urls)))
        self.client = client
        self.limits = limits
        self.rejected: dict[str, int] = {r.value: 0 for r in (Refusal.MALFORMED, Refusal.OVERSIZED)}
        self.forwarded = [0] * len(urls)
        self.failures = [0] * len(urls)

    def _name(self, shard: int) -> str:
        return f"shard {self.shards[shard]} ({_display(self.urls[shard])})"

    def refuse(self, status: int, reason: Refusal, detail: str) -> tuple[int, dict[str, Any]]:
        self.rejected[reason.value] += 1
        return status, {"schema": RESULTS_SCHEMA, "error": reason.value, "detail": detail}

    async def submit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return self.refuse(400, Refusal.MALFORMED, "the body is not JSON")
        if not isinstance(doc, dict) or set(doc) != {"reports"} or not isinstance(doc["reports"], list):
            return self.refuse(400, Refusal.MALFORMED, 'the body must be {"reports": [...]}')
        envelopes: list[object] = doc["reports"]
        if len(envelopes) > self.limits.max_reports:
            return self.refuse(413, Refusal.OVERSIZED,
                               f"{len(envelopes)} reports in one batch, over {self.limits.max_reports}")  # fmt: skip
        parts = shards.split(envelopes, len(self.urls))
        answers = await asyncio.gather(*(self._forward(s, [envelopes[i] for i in ix]) for s, ix in parts.items()))
        by_shard = dict(zip(parts, answers, strict=True))
        results = shards.merge(len(envelopes), parts, by_shard)
        counts = {status: sum(r["status"] == status for r in results) for status in ("accepted", "refused")}
        failed = [detail for detail in by_shard.values() if isinstance(detail, str)]
        if not failed:
            return 200, {"schema": RESULTS_SCHEMA, **counts, "results": results}
        unavailable = len(results) - sum(counts.values())
        return 503, {"schema": RESULTS_SCHEMA, "error": "unavailable",
                     "detail": f"{unavailable} reports not taken, send them again: {'; '.join(failed)}",
                     **counts, "unavailable": unavailable, "results": results}  # fmt: skip

    async def _forward(self, shard: int, envelopes: list[object]) -> list[dict[str, Any]] | str:
        """The part's checked results, or why its shard did not take it."""
        n = len(envelopes)
        try:
            response = await self.client.post(f"{self.urls[shard]}/v1/reports", content=_body(envelopes),
                                              headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as exc:
            return self._failed(shard, n, f"is unreachable: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": "))
        if response.status_code != 200:
            return self._failed(shard, n, f"answered HTTP {response.status_code}")
        try:
            results = shards.part_results(response.json(), n)
        except ValueError as exc:  # BadShardAnswer is one, and so is a body that is not JSON
            return self._failed(shard, n, f"answered no results document for its part ({str(exc)[:200]})")
        self.forwarded[shard] += n
        return results

    def _failed(self, shard: int, reports: int, problem: str) -> str:
        self.failures[shard] += 1
        detail = f"{self._name(shard)} {problem}"
        log.error("%s; %d reports answered unavailable", detail, reports)
        return detail

    async def health(self) -> tuple[int, dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            entry: dict[str, Any] = {"shard": str(self.shards[i]), "url": _display(self.urls[i])}
            try:
                response = await self.client.get(f"{self.urls[i]}/healthz", timeout=HEALTH_TIMEOUT_S)
                doc = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                return {**entry, "status": "unavailable", "detail": type(exc).__name__}
            if response.status_code != 200 or not isinstance(doc, dict):
                return {**entry, "status": "unavailable", "detail": f"HTTP {response.status_code}"}
            if doc.get("shard") != entry["shard"]:
                return {**entry, "status": "misconfigured",
                        "detail": f"it says it is shard {doc.get('shard') or 'none (not sharded)'}"}  # fmt: skip
            return {**entry, "status": "ok", "devices": doc.get("devices")}

        entries = await asyncio.gather(*(one(i) for i in range(len(self.urls))))
        ok = all(e["status"] == "ok" for e in entries)
        return (200 if ok else 503), {"status": "ok" if ok else "degraded", "shards": list(entries)}

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.registry import Collector

        router = self

        class _Counts(Collector):
            def collect(self) -> Any:
                rejected = CounterMetricFamily("otactl_router_requests_rejected",
                                               "Requests the router refused whole, by reason.", labels=["reason"])
                for reason, n in sorted(router.rejected.items()):
                    rejected.add_metric([reason], n)
                forwarded = CounterMetricFamily("otactl_router_reports_forwarded",
                                                "Reports a shard took (accepted or refused).", labels=["shard"])
                failures = CounterMetricFamily("otactl_router_shard_failures",
                                               "Parts a shard did not take (answered unavailable).", labels=["shard"])
                for i, shard in enumerate(router.shards):
                    forwarded.add_metric([str(shard)], router.forwarded[i])
                    failures.add_metric([str(shard)], router.failures[i])
                yield from (rejected, forwarded, failures)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Counts())
        return generate_latest(registry)


def create_app(urls: Sequence[str], *, limits: IngestLimits = IngestLimits(), timeout: float = 30.0,
               client: httpx.AsyncClient | None = None) -> Starlette:  # fmt: skip
    """The router app; without ``client`` it opens one (pooled, ``timeout`` seconds) for its lifetime."""
    own = client is None
    router = Router(urls, client or httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256)),
                    limits=limits)  # fmt: skip

    async def post_reports(request: Request) -> Response:
        body = await read_limited(request, limits.max_body_bytes)
        if body is None:
            status, doc = router.refuse(413, Refusal.OVERSIZED, f"the body is over {limits.max_body_bytes} bytes")
        else:
            status, doc = await router.submit(body)
        return JSONResponse(doc, status_code=status)

    async def healthz(request: Request) -> Response:
        status, doc = await router.health()
        return JSONResponse(doc, status_code=status)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(router.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if own:
            await router.client.aclose()

    app = Starlette(lifespan=lifespan, routes=[
        Route("/v1/reports", post_reports, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])  # fmt: skip
    app.state.router = router
    return app


def serve(
    urls: Sequence[str],
    host: str,
    port: int,
    *,
    limits: IngestLimits = IngestLimits(),
    timeout: float = 30.0,
    log_level: str = "info",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the router until SIGINT/SIGTERM (one process: it only parses and forwards)."""
    import uvicorn

    from otactl.telemetry.server import bind, url_of

    app = create_app(urls, limits=limits, timeout=timeout)
    sock = bind(host, port)
    if ready is not None:
        ready(url_of(sock))
    config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
