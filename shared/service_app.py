"""Builds one service process: FastAPI + FastStream KafkaRouter, migrations, outbox relay,
idempotent batch consumer, /health and /metrics. Services supply their own routes,
event handlers and background loops; everything about delivery lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from faststream import AckPolicy
from faststream.kafka.fastapi import KafkaMessage, KafkaRouter
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.audit.keys import KeyRing, ServiceKey
from shared.audit.loop import audit_loop
from shared.auth.dependency import build_authenticator
from shared.auth.enforce import enforce_route_permission, guard_service
from shared.config import ServiceSettings
from shared.db import create_pool, migrate
from shared.docs_pages import install_docs_pages
from shared.http_guard import RequestGuard, refuse_bad_path_text
from shared.messaging import signing
from shared.messaging.consumer import Handlers, IdempotentBatchConsumer, PrepareBatch
from shared.messaging.epochs import ConsumerEpochs
from shared.messaging.fetch import wait_for_data_when_idle
from shared.messaging.kafka_security import aiokafka_security, broker_security
from shared.messaging.membership import AssignmentHook
from shared.messaging.outbox import OutboxRelay
from shared.messaging.watch import ConsumerWatch, exit_process
from shared.metrics import REGISTRY
from shared.openapi import install_openapi
from shared.problems import Refusal, cap_errors, problem, refusal_response
from shared.unit_of_work import UnitOfWorkFactory

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
    subscriber: Any = None
    """FastStream's Kafka subscriber (``.consumer`` is the aiokafka consumer once started)."""
    started_at: float = field(default_factory=time.monotonic)
    extras: dict[str, Any] = field(default_factory=dict)
    uows: UnitOfWorkFactory | None = None
    """The service's unit-of-work factory (set by its bootstrap); routes get a unit of
    work through ``shared.http_deps.UnitOfWorkDep``."""
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "service not started"
        return self.pool


def group_instance_id(service: str, settings: ServiceSettings) -> str | None:
    """The consumer's static member id, when static membership is on: unique per host
    (a container's host name), stable across the container's restarts."""
    if not settings.consumer_static_membership:
        return None
    return f"{service}-{socket.gethostname()}"


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def build_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    migrations: Path,
    subscribe_to: Sequence[str],
    handlers: Handlers,
    routers: Sequence[APIRouter],
    background_loops: Sequence[BackgroundLoop] = (),
    description: str = "",
    prepare_batch: PrepareBatch | None = None,
) -> FastAPI:
    runtime = ServiceRuntime(name=name, settings=settings)
    # Every route needs a verified bearer token holding the permission the table in
    # shared/auth/permissions.yaml names (checked against the routes below, at start).
    authenticator = build_authenticator(name, http_host=settings.http_host)
    consumer = IdempotentBatchConsumer(
        service=name,
        schema=name,
        pool=None,
        handlers=handlers,
        retry_backoff_s=settings.consumer_retry_backoff_s,
        prepare_batch=prepare_batch,
    )
    runtime.consumer = consumer
    # Inside each rebalance: member note for the supervisor, broker-epoch check.
    assignment_hook: AssignmentHook | None = None
    if subscribe_to:
        member_dir = settings.consumer_member_dir
        assignment_hook = AssignmentHook(
            name, group=name, member_dir=Path(member_dir) if member_dir else None
        )
    runtime.watch = ConsumerWatch(
        service=name,
        stall_after_s=settings.consumer_stall_after_s,
        interval_s=settings.consumer_watch_interval_s,
        on_stall=exit_process if settings.consumer_stall_exit else _log_stall,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _install_event_keys(name, settings, consumer)
        await migrate(settings.database_url, name, migrations)
        runtime.pool = await create_pool(
            settings.database_url,
            name,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
        )
        consumer.pool = runtime.pool
        if assignment_hook is not None:
            assignment_hook.epochs = ConsumerEpochs(runtime.pool, name)
        runtime.relay = OutboxRelay(
            pool=runtime.pool,
            dsn=settings.database_url,
            schema=name,
            bootstrap_servers=settings.kafka_bootstrap,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            max_attempts=settings.outbox_max_attempts,
            retention_s=settings.outbox_retention_s,
            broker_check_interval_s=settings.outbox_broker_check_interval_s,
            client_security=aiokafka_security(settings),
        )
        await runtime.relay.start()
        for loop in background_loops:
            runtime.background.append(asyncio.create_task(_forever(loop, runtime)))
        if settings.audit_seal_dir and settings.event_signing_key:
            # Seal the chain heads and verify the chains, every audit_seal_interval_s.
            runtime.background.append(asyncio.create_task(_forever(audit_loop, runtime)))
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
            await authenticator.aclose()

    kafka = KafkaRouter(
        settings.kafka_bootstrap,
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=name)],
        lifespan=lifespan,
        client_id=f"claimflow-{name}",
        # Its own principal on docker-compose's Kafka (SASL/SCRAM; ACLs: docs/audit.md).
        security=broker_security(settings),
        # FastStream logs "Received" and "Processed" for every fetched batch at this level:
        # at INFO that was two formatted, written log lines per batch on the claim path.
        # Start-up and rebalance messages keep their own level (INFO).
        log_level=logging.DEBUG,
        # /asyncapi is served by shared.docs_pages (offline assets, no try-it-out).
        schema_url=None,
        include_in_schema=True,
    )

    # What the watch needs is the subscriber object (it holds the aiokafka consumer once
    # started), not the call wrapper that decorating the handler function returns.
    subscriber: Any = None
    if subscribe_to:
        kafka_subscriber = kafka.subscriber(
            *subscribe_to,
            group_id=name,
            batch=True,
            max_records=settings.consumer_batch_max_records,
            batch_timeout_ms=settings.consumer_batch_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            group_instance_id=group_instance_id(name, settings),
            listener=assignment_hook,
            # Offsets are committed only after the batch's transaction commits; on an
            # infrastructure error the batch is rewound and read again. Poison
            # messages never raise here: the consumer dead-letters them.
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )

        @kafka_subscriber
        async def on_events(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = raw if isinstance(raw, tuple) else (raw,)
            await consumer.handle_batch(records)

        subscriber = kafka_subscriber
        if assignment_hook is not None:
            assignment_hook.source = kafka_subscriber
            runtime.watch.assignment_hook = assignment_hook

    runtime.subscriber = subscriber

    @kafka.after_startup
    async def _watch_consumer(app: FastAPI) -> None:
        if subscriber is not None:
            # No fixed sleep between an idle fetch and the next (shared/messaging/fetch.py).
            wait_for_data_when_idle(subscriber.consumer, settings.consumer_idle_wait_ms)
            # FastStream's own "waiting for messages" is at DEBUG now (log_level above);
            # bench.service_startup and people reading the log look for this line.
            log.info("%s: consumer subscribed to %s, waiting for messages", name, subscribe_to)
        if subscriber is not None and runtime.watch is not None:
            runtime.watch.start(subscriber)
        if subscriber is not None:
            # Events held for want of a handler: this build may have one now.
            runtime.background.append(asyncio.create_task(_release_held(consumer)))

    app = FastAPI(
        title=f"claimflow {name}",
        description=description,
        version="0.1.0",
        dependencies=[Depends(refuse_bad_path_text), Depends(enforce_route_permission)],
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.include_router(kafka)
    install_docs_pages(app, kafka)
    install_openapi(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Refusal, _refusal)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
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
        # Progress is a relay cycle that reached the broker and the database without an
        # error; a failing cycle leaves the time where it was.
        relay_idle = time.monotonic() - relay.last_progress_at if relay else None
        checks["outbox_relay"] = (
            "ok"
            if relay_idle is not None and relay_idle < 10 * settings.outbox_poll_interval_s + 30
            else f"stalled: no successful cycle for {relay_idle or 0:.0f}s"
            + (f" ({relay.last_error})" if relay and relay.last_error else "")
        )
        healthy = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {
            "status": "ok" if healthy else "degraded",
            "checks": checks,
            "uptime_s": round(time.monotonic() - runtime.started_at, 1),
        }
        if runtime.watch and subscriber is not None:
            body["consumer_lag"] = runtime.watch.lag_total
        return JSONResponse(
            body,
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    guard_service(app, name, authenticator)
    return app


def _install_event_keys(
    name: str, settings: ServiceSettings, consumer: IdempotentBatchConsumer
) -> None:
    """Sign what this service stages with its key; verify what it consumes against the
    configured public keys (docs/audit.md). Fails closed: signatures required and no
    public keys configured is a start-up error, not a service that applies anything."""
    if settings.event_signing_key:
        signing.install_signer(name, ServiceKey.load(settings.event_signing_key))
    else:
        log.warning("%s: no CLAIMFLOW_EVENT_SIGNING_KEY: its events are published unsigned", name)
    if settings.event_signatures == "off":
        log.warning("%s: CLAIMFLOW_EVENT_SIGNATURES=off: consumed events are not verified", name)
        return
    if not settings.event_public_keys:
        raise RuntimeError(
            "CLAIMFLOW_EVENT_SIGNATURES=required but CLAIMFLOW_EVENT_PUBLIC_KEYS is not set: "
            "give the services' public keys (public.json) or turn signatures off"
        )
    consumer.verifier = signing.EventVerifier(KeyRing.load(settings.event_public_keys))


async def _release_held(consumer: IdempotentBatchConsumer) -> None:
    try:
        await consumer.release_held()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s: releasing held events failed; they stay held", consumer.service)


def _log_stall(reason: str) -> None:
    log.error("consumer stalled (CLAIMFLOW_CONSUMER_STALL_EXIT=false, staying up): %s", reason)


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
# bug: 503 tells a client to retry with the same Idempotency-Key. It must not claim that
# nothing was stored: the connection may have been lost after (or during) the COMMIT.
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
        "the service's database is unavailable; the request may or may not have been "
        "applied: retry later with the same Idempotency-Key, or check before repeating it",
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
    return JSONResponse(
        {"detail": "validation failed", "errors": cap_errors(errors)}, status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Every HTTPException (ours, FastAPI's 404/405, a dependency's 401) in the one error
    body; a ``detail`` dict names the field and the rule."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(detail, dict):
        message = str(detail.get("message", ""))
        return problem(
            exc.status_code,
            message,
            field=str(detail.get("field", "")),
            rule=str(detail.get("rule", "invalid")),
            headers=headers,
        )
    return problem(
        exc.status_code,
        str(detail),
        field="path" if exc.status_code in (404, 405) else "",
        rule=_RULE_OF_STATUS.get(exc.status_code, f"http_{exc.status_code}"),
        headers=headers,
    )


async def _refusal(request: Request, exc: Exception) -> JSONResponse:
    """A use case's refusal (``shared.problems.Refusal``) in the one error body."""
    assert isinstance(exc, Refusal)
    return refusal_response(exc)


_RULE_OF_STATUS = {404: "exists", 405: "method_allowed", 401: "authenticated", 403: "allowed"}
