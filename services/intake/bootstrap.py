"""Wires intake: settings, routes, event handlers, the lapse loop and the shared runtime."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI

from services.intake.config import IntakeSettings
from services.intake.domain.model import beijing_today
from services.intake.entrypoints.http import router
from services.intake.metrics import DOCUMENTS_PENDING
from services.intake.service_layer.handlers import (
    SERVICE,
    IntakePolicy,
    lapse_overdue,
    make_tracker,
    refresh_documents_pending,
)
from shared.contracts import REGISTRY, payout_events, review_events
from shared.contracts.topics import PAYOUT_EVENTS, REVIEW_EVENTS
from shared.programs import load_catalogue
from shared.service_app import ServiceRuntime, build_service_app
from shared.table_gauges import SingleExporter
from shared.workdays import publish_year_gauges

# Every event type review and payout publish: all go on the tracker's timeline. An
# unknown version of one is recorded, not refused.
TRACKED_EVENTS = sorted(
    {
        event_type
        for (event_type, _), model in REGISTRY.items()
        if model.__module__ in (review_events.__name__, payout_events.__name__)
    }
)


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    policy = IntakePolicy(
        policy_year=settings.refund_policy_year,
        review_due_working_days=settings.review_due_working_days,
        documents_due_working_days=settings.documents_due_working_days,
        catalogue=load_catalogue(),
        finance_due_working_days=settings.finance_due_working_days,
    )
    tracker = make_tracker(policy)

    exporter = SingleExporter("intake", [DOCUMENTS_PENDING])

    async def lapse_loop(runtime: ServiceRuntime) -> None:
        """Lapses claims whose promised documents did not arrive in time (PostgreSQL
        holds the deadlines; the conditional UPDATE makes each lapse happen once).
        One intake instance exports the documents-pending gauge (shared/table_gauges)."""
        try:
            while True:
                now = datetime.now(UTC)
                as_of = now + timedelta(seconds=settings.clock_offset_s)
                async with runtime.db.acquire() as conn:
                    lapsed = await lapse_overdue(conn, as_of=as_of)
                    if await exporter.holds(runtime.db):
                        await refresh_documents_pending(conn)
                publish_year_gauges(beijing_today(now))
                if not lapsed:
                    await asyncio.sleep(settings.lapse_check_interval_s)
        finally:
            await exporter.release()

    return build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[REVIEW_EVENTS, PAYOUT_EVENTS],
        handlers={event_type: tracker for event_type in TRACKED_EVENTS},
        routers=[router],
        background_loops=[lapse_loop],
        description="Tax window: register claims and answer where each claim is.",
    )
