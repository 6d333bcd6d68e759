"""Wires review: settings, routes, event handlers, the deadline scheduler, and the shared
service runtime."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.review import metrics
from services.review.config import ReviewSettings
from services.review.entrypoints.http import router
from services.review.service_layer.handlers import (
    SERVICE,
    ReviewPolicy,
    deadline_loop,
    review_event_handlers,
)
from shared.contracts.topics import INTAKE_EVENTS
from shared.service_app import build_service_app


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()
    policy = ReviewPolicy.from_settings(settings)
    catalogue = policy.catalogue
    metrics.initialise(
        set(catalogue.vat_refund.departments).union(*(p.departments for p in catalogue.programs)),
        stages=("department_review", "sign_off"),
    )
    app = build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[INTAKE_EVENTS],
        handlers=review_event_handlers(policy),
        routers=[router],
        background_loops=[deadline_loop(policy, settings.deadline_scan_interval_s)],
        description=(
            "Joint review (联核联审联批): automatic cross-checks, parallel department "
            "decisions, sign-off above a threshold, time limits with escalation."
        ),
    )
    app.state.review_policy = policy
    return app
