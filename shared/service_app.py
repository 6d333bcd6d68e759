"""Builds one service process: FastAPI + FastStream KafkaRouter, migrations, outbox relay,
idempotent batch consumer, /health and /metrics. Services supply their own routes,
event handlers and background loops; everything about delivery lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from faststream import AckPolicy
from faststream.kafka.fastapi import KafkaMessage, KafkaRouter
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.config import ServiceSettings
from shared.db import create_pool, migrate
from shared.messaging.consumer import EventHandler, IdempotentBatchConsumer
from shared.messaging.outbox import OutboxRelay
from shared.messaging.watch import ConsumerWatch
from shared.metrics import REGISTRY
from shared.problems import problem

log = logging.getLogger(__name__)

BackgroundLoop = Callable[["ServiceRuntime"], Awaitable[None]]


@dataclass
class ServiceRuntime:
    """What a running service holds; handed to routes via ``request.app.state.runtime``."""

    name: str
    settings: ServiceSettings
    pool: asyncpg.Pool | None = None
    relay: OutboxRelay | None = None
    consumer: IdempotentBatchConsumer | None = None
    watch: ConsumerWatch | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "service not started"
        return self.pool


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def build_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    migrations: Path,
    subscribe_to: Sequence[str],
    handlers: Mapping[str, EventHandler],
    routers: Sequence[APIRouter],
    background_loops: Sequence[BackgroundLoop] = (),
    description: str = "",
) -> FastAPI:
    runtime = ServiceRuntime(name=name, settings=settings)
    consumer = IdempotentBatchConsumer(
        service=name,
        schema=name,
        pool=None,
        handlers=handlers,
        retry_backoff_s=settings.consumer_retry_backoff_s,
    )
    runtime.consumer = consumer
    runtime.watch = ConsumerWatch(service=name, stall_after_s=settings.consumer_stall_after_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, name, migrations)
        runtime.pool = await create_pool(
            settings.database_url,
            name,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
        )
        consumer.pool = runtime.pool
        runtime.relay = OutboxRelay(
            pool=runtime.pool,
            dsn=settings.database_url,
            schema=name,
            bootstrap_servers=settings.kafka_bootstrap,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        )
        await runtime.relay.start()
        for loop in background_loops:
            runtime.background.append(asyncio.create_task(_forever(loop, runtime)))
        try:
            yield
        finally:
            for task in runtime.background:
                task.cancel()
            for task in runtime.background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if runtime.watch:
                await runtime.watch.stop()
            await runtime.relay.stop()
            await runtime.pool.close()

    kafka = KafkaRouter(
        settings.kafka_bootstrap,
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=name)],
        lifespan=lifespan,
        client_id=f"claimflow-{name}",
        schema_url="/asyncapi",
        include_in_schema=True,
    )

    subscriber = None
    if subscribe_to:

        @kafka.subscriber(
            *subscribe_to,
            group_id=name,
            batch=True,
            max_records=settings.consumer_batch_max_records,
            batch_timeout_ms=settings.consumer_batch_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            # Offsets are committed only after the batch's transaction commits; on an
            # infrastructure error the batch is rewound and read again. Poison
            # messages never raise here: the consumer dead-letters them.
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )
        async def on_events(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = raw if isinstance(raw, tuple) else (raw,)
            await consumer.handle_batch(records)

        subscriber = on_events

    @kafka.after_startup
    async def _watch_consumer(app: FastAPI) -> None:
        if subscriber is not None and runtime.watch is not None:
            runtime.watch.start(subscriber)

    app = FastAPI(title=f"claimflow {name}", description=description, version="0.1.0")
    app.state.runtime = runtime
    app.include_router(kafka)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unavailable in _UNAVAILABLE:
        app.add_exception_handler(unavailable, _service_unavailable)

    @app.get("/health", tags=["operations"])
    async def health() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            async with runtime.db.acquire() as conn:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"down: {type(exc).__name__}"
        checks["broker"] = "ok" if await kafka.broker.ping(timeout=2) else "down"
        problem = runtime.watch.problem() if runtime.watch and subscriber else None
        checks["consumer"] = problem or "ok"
        relay = runtime.relay
        relay_idle = time.monotonic() - relay.last_cycle_at if relay else None
        checks["outbox_relay"] = (
            "ok"
            if relay_idle is not None and relay_idle < 10 * settings.outbox_poll_interval_s + 30
            else "stalled"
        )
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "checks": checks},
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


async def _forever(loop: BackgroundLoop, runtime: ServiceRuntime) -> None:
    """Runs a background loop, restarting it after an error instead of dying quietly."""
    while True:
        try:
            await loop(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: background loop %s failed; restarting", runtime.name, loop)
            await asyncio.sleep(1)


# The database being unreachable is the service's trouble, not the caller's, and not a
# bug: 503 tells a client to retry (with the same Idempotency-Key), nothing was stored.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


async def _service_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: database unavailable: %r", request.method, request.url.path, exc)
    return problem(
        503,
        "the service's database is unavailable; nothing was changed, retry later",
        field="",
        rule="service_unavailable",
        message=type(exc).__name__,
        headers={"Retry-After": "5"},
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one entry per violated rule: the field's path and the rule, in words."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "rule": err.get("type", "invalid"),
            "message": err.get("msg", ""),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": "validation failed", "errors": errors}, status_code=422)
