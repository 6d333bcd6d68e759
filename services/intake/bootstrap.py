"""Intake's composition root: settings, the clock, the unit-of-work factory, the
policy, what it consumes, its routes and the lapse loop. The only place in intake that
chooses the clock (``system_clock``); everything else reads ``uow.now``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.intake import subscriptions
from services.intake.config import IntakeSettings
from services.intake.domain.rules import beijing_today
from services.intake.entrypoints.http import router, set_claim_examples
from services.intake.metrics import DOCUMENTS_PENDING
from services.intake.service_layer.lapse import lapse_overdue, refresh_documents_pending
from services.intake.service_layer.policy import IntakePolicy
from shared.audit.chain import audit_hook
from shared.contracts.topics import INTAKE_EVENTS
from shared.service_app import BackgroundLoop, ServiceRuntime, build_service_app
from shared.table_gauges import SingleExporter
from shared.unit_of_work import Clock, UnitOfWorkFactory, system_clock
from shared.workdays import publish_year_gauges

SERVICE = subscriptions.SERVICE


def create_app(settings: IntakeSettings | None = None, clock: Clock = system_clock) -> FastAPI:
    settings = settings or IntakeSettings()
    # Every emitted event is chained in the audit log, same transaction (docs/audit.md).
    uows = UnitOfWorkFactory(SERVICE, INTAKE_EVENTS, clock=clock, hooks=(audit_hook,))
    policy = IntakePolicy.from_settings(settings)
    table = subscriptions.build(policy)
    set_claim_examples(policy.catalogue, uows.now())
    app = build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=table.topics,
        handlers=table.handlers(uows),
        routers=[router],
        background_loops=[_lapse_loop(settings, uows)],
        description="Tax window: register claims and answer where each claim is.",
    )
    runtime: ServiceRuntime = app.state.runtime
    runtime.uows = uows
    runtime.extras["policy"] = policy
    return app


def _lapse_loop(settings: IntakeSettings, uows: UnitOfWorkFactory) -> BackgroundLoop:
    exporter = SingleExporter(SERVICE, [DOCUMENTS_PENDING])
    # TEST ONLY (CLAIMFLOW_CLOCK_OFFSET_S): deadlines are compared with a clock run
    # ahead, to make them pass without waiting days; the events keep the real time.
    offset = timedelta(seconds=settings.clock_offset_s)

    async def lapse_loop(runtime: ServiceRuntime) -> None:
        """Lapses claims whose promised documents did not arrive in time (PostgreSQL
        holds the deadlines; the conditional UPDATE makes each lapse happen once).
        One intake instance exports the documents-pending gauge (shared/table_gauges)."""
        try:
            while True:
                async with uows.acquire(runtime.db) as uow:
                    lapsed = await lapse_overdue(uow, as_of=uow.now + offset)
                if await exporter.holds(runtime.db):
                    async with runtime.db.acquire() as conn:
                        await refresh_documents_pending(conn)
                publish_year_gauges(beijing_today(uows.now()))
                if not lapsed:
                    await asyncio.sleep(settings.lapse_check_interval_s)
        finally:
            await exporter.release()

    return lapse_loop
