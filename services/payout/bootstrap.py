"""Wires payout: settings, routes, event handlers, the gateway and its loops."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from fastapi import FastAPI

from services.payout import metrics
from services.payout.adapters.gateway import SimulatedGateway
from services.payout.config import PayoutSettings
from services.payout.entrypoints.http import router
from services.payout.service_layer.handlers import (
    SERVICE,
    GaugeExporter,
    RetryPolicy,
    dispatch_requested,
    on_claim_lapsed,
    on_claim_withdrawn,
    on_documents_completed,
    on_review_decided,
    record_notices,
    resolve_unknown,
    seed_funds,
)
from shared.contracts.topics import INTAKE_EVENTS, REVIEW_EVENTS
from shared.db import create_pool
from shared.money import yuan_to_fen
from shared.programs import load_catalogue
from shared.service_app import ServiceRuntime, build_service_app

GAUGE_REFRESH_S = 2.0


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


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    settings = settings or PayoutSettings()
    catalogue = load_catalogue()
    metrics.initialise({catalogue.vat_refund.fund, *(p.fund for p in catalogue.programs)})
    policy = RetryPolicy(
        base_s=settings.retry_base_s,
        max_s=settings.retry_max_s,
        max_attempts=settings.max_attempts,
        claim_lease_s=settings.payout_claim_lease_s,
    )
    cap = settings.treasury_refund_cap_yuan

    async def payment_loop(runtime: ServiceRuntime) -> None:
        gateway = runtime.extras.get("gateway")
        if gateway is None:
            async with runtime.db.acquire() as conn:
                await seed_funds(conn, load_catalogue(), None if cap is None else yuan_to_fen(cap))
            gateway = runtime.extras["gateway"] = await make_gateway(runtime, settings)
        exporter = GaugeExporter(SERVICE)
        refreshed = 0.0
        try:
            while True:
                sent = await dispatch_requested(runtime.db, gateway, policy)
                noticed = await record_notices(runtime.db, gateway, policy)
                resolved = await resolve_unknown(runtime.db, gateway, policy)
                if time.monotonic() - refreshed > GAUGE_REFRESH_S:
                    await exporter.refresh(runtime.db, stuck_after_s=settings.payout_stuck_after_s)
                    refreshed = time.monotonic()
                if not sent and not noticed and not resolved:
                    await asyncio.sleep(settings.dispatch_interval_s)
        finally:
            await exporter.release()

    return build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[REVIEW_EVENTS, INTAKE_EVENTS],
        handlers={
            "review.decided": on_review_decided,
            "claim.documents_completed": on_documents_completed,
            "claim.lapsed": on_claim_lapsed,
            "claim.withdrawn": on_claim_withdrawn,
        },
        routers=[router],
        background_loops=[payment_loop],
        description="Payout: budgets, payment vouchers to the treasury/bank, reconciliation.",
    )
