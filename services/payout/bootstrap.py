"""Wires payout: settings, routes, event handlers, the gateway and its loops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from services.payout.adapters.gateway import SimulatedGateway
from services.payout.config import PayoutSettings
from services.payout.entrypoints.http import router
from services.payout.service_layer.handlers import (
    SERVICE,
    dispatch_requested,
    on_review_decided,
    record_confirmations,
)
from shared.contracts.topics import REVIEW_EVENTS
from shared.service_app import ServiceRuntime, build_service_app


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    settings = settings or PayoutSettings()

    async def payment_loop(runtime: ServiceRuntime) -> None:
        gateway = runtime.extras.get("gateway")
        if gateway is None:
            await SimulatedGateway.prepare(settings.database_url)
            gateway = runtime.extras["gateway"] = SimulatedGateway(
                runtime.db,
                min_delay_s=settings.gateway_min_delay_s,
                max_delay_s=settings.gateway_max_delay_s,
                failure_rate=settings.gateway_failure_rate,
            )
        while True:
            sent = await dispatch_requested(runtime.db, gateway)
            confirmed = await record_confirmations(runtime.db, gateway)
            if not sent and not confirmed:
                await asyncio.sleep(settings.dispatch_interval_s)

    return build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[REVIEW_EVENTS],
        handlers={"review.decided": on_review_decided},
        routers=[router],
        background_loops=[payment_loop],
        description="Payout: pays approved claims through the treasury/bank gateway.",
    )
