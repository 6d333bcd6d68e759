"""The composition root of review: settings → policy, the clock and the unit-of-work
factory, the dispatch table, the routes and the deadline scheduler — the one place
that reads the wall clock (``system_clock``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.review import metrics
from services.review.config import ReviewSettings
from services.review.entrypoints.http import router
from services.review.service_layer.deadlines import deadline_loop
from services.review.service_layer.policy import ReviewPolicy
from services.review.subscriptions import review_subscriptions
from shared.audit.chain import audit_hook
from shared.contracts.topics import REVIEW_EVENTS
from shared.programs import Catalogue
from shared.service_app import build_service_app
from shared.unit_of_work import Clock, UnitOfWorkFactory, system_clock

SERVICE = "review"


def create_app(
    settings: ReviewSettings | None = None,
    *,
    clock: Clock = system_clock,
    catalogue: Catalogue | None = None,
) -> FastAPI:
    settings = settings or ReviewSettings()
    policy = ReviewPolicy.from_settings(settings, catalogue)
    # Every emitted event is chained in the audit log, same transaction (docs/audit.md).
    uows = UnitOfWorkFactory(SERVICE, REVIEW_EVENTS, clock=clock, hooks=(audit_hook,))
    subscriptions = review_subscriptions(policy)
    metrics.initialise(policy.catalogue.departments, stages=("department_review", "sign_off"))
    app = build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=subscriptions.topics,
        handlers=subscriptions.handlers(uows),
        routers=[router],
        background_loops=[
            deadline_loop(uows, policy.departments, settings.deadline_scan_interval_s)
        ],
        description=(
            "Joint review (联核联审联批): automatic cross-checks, parallel department "
            "decisions, sign-off above a threshold, time limits with escalation."
        ),
    )
    runtime = app.state.runtime
    runtime.uows = uows
    runtime.extras["review_policy"] = policy
    return app
