"""Payout's composition root: settings, catalogue, clock, unit of work, subscriptions,
routes, the gateway and the payment loop. The only place that names the wall clock."""

from __future__ import annotations

import random
import time
from pathlib import Path

from fastapi import FastAPI

from services.payout import metrics
from services.payout.adapters.gateway import SimulatedGateway
from services.payout.config import PayoutSettings
from services.payout.domain.model import RetryPolicy
from services.payout.entrypoints.dashboard import router as dashboard_router
from services.payout.entrypoints.http import router
from services.payout.gauges import GaugeExporter
from services.payout.service_layer.dispatch import dispatch_requested
from services.payout.service_layer.funding import seed_funds
from services.payout.service_layer.notices import record_notices
from services.payout.service_layer.on_events import batch_fund_locks
from services.payout.service_layer.payments import Payments
from services.payout.service_layer.resolver import resolve_unknown
from services.payout.subscriptions import SERVICE, payout_subscriptions
from shared.audit.chain import audit_hook
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import create_pool
from shared.money import yuan_to_fen
from shared.programs import Catalogue, load_catalogue
from shared.service_app import ServiceRuntime, build_service_app
from shared.unit_of_work import Clock, UnitOfWorkFactory, system_clock
from shared.wakeup import Wakeup

GAUGE_REFRESH_S = 2.0
PAYOUT_WORK_CHANNEL = "claimflow_payout_work"
"""Notified by the trigger of migration 0005 when a payout becomes `requested`."""


async def make_gateway(runtime: ServiceRuntime, settings: PayoutSettings) -> SimulatedGateway:
    # The bank's books are not payout's: their own pool, as the bank's own role.
    dsn = settings.gateway_database_url or settings.database_url
    await SimulatedGateway.prepare(dsn)
    runtime.extras["gateway_pool"] = pool = await create_pool(
        dsn, SimulatedGateway.SCHEMA, min_size=1, max_size=4
    )
    return SimulatedGateway(
        pool,
        min_delay_s=settings.gateway_min_delay_s,
        max_delay_s=settings.gateway_max_delay_s,
        transient_failure_rate=settings.gateway_transient_failure_rate,
        permanent_failure_rate=settings.gateway_permanent_failure_rate,
        return_rate=settings.gateway_return_rate,
        lost_answer_rate=settings.gateway_lost_answer_rate,
        magic_accounts=settings.gateway_magic_accounts,
        rng=random.Random(settings.gateway_seed),
    )


def retry_policy(settings: PayoutSettings) -> RetryPolicy:
    return RetryPolicy(
        base_s=settings.retry_base_s,
        max_s=settings.retry_max_s,
        max_attempts=settings.max_attempts,
        claim_lease_s=settings.payout_claim_lease_s,
    )


def create_app(
    settings: PayoutSettings | None = None,
    *,
    catalogue: Catalogue | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    settings = settings or PayoutSettings()
    catalogue = catalogue or load_catalogue()
    metrics.initialise(catalogue.funds)
    # Every emitted event is chained in the audit log, same transaction (docs/audit.md).
    uows = UnitOfWorkFactory(SERVICE, PAYOUT_EVENTS, clock=clock, hooks=(audit_hook,))
    subscriptions = payout_subscriptions(catalogue)
    cap = settings.treasury_refund_cap_yuan

    async def start_payments(runtime: ServiceRuntime) -> Payments:
        async with uows.acquire(runtime.db) as uow:
            await seed_funds(uow, catalogue, None if cap is None else yuan_to_fen(cap))
        gateway = await make_gateway(runtime, settings)
        return Payments(uows, runtime.db, gateway, retry_policy(settings))

    async def payment_loop(runtime: ServiceRuntime) -> None:
        payments = runtime.extras.get("payments")
        if payments is None:
            payments = runtime.extras["payments"] = await start_payments(runtime)
        exporter = GaugeExporter(SERVICE)
        # Woken at the commit that makes a payout issuable (migration 0005), so a claim
        # does not wait out the idle poll; notices and retries fall due by the clock.
        wakeup = Wakeup(settings.database_url, PAYOUT_WORK_CHANNEL)
        refreshed = 0.0
        try:
            while True:
                await wakeup.listen()
                sent = await dispatch_requested(payments)
                noticed = await record_notices(payments)
                resolved = await resolve_unknown(payments)
                if time.monotonic() - refreshed > GAUGE_REFRESH_S:
                    await exporter.refresh(runtime.db, stuck_after_s=settings.payout_stuck_after_s)
                    refreshed = time.monotonic()
                if not sent and not noticed and not resolved:
                    await wakeup.wait(settings.dispatch_interval_s)
        finally:
            await wakeup.close()
            await exporter.release()

    app = build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=subscriptions.topics,
        handlers=subscriptions.handlers(uows),
        routers=[router, dashboard_router],
        background_loops=[payment_loop],
        prepare_batch=batch_fund_locks(catalogue),
        description="Payout: budgets, payment vouchers to the treasury/bank, reconciliation.",
    )
    app.state.runtime.uows = uows
    return app
