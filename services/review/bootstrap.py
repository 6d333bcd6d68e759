"""Wires review: settings, routes, event handlers, and the shared service runtime."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.review.config import ReviewSettings
from services.review.entrypoints.http import router
from services.review.service_layer.handlers import SERVICE, open_review
from shared.contracts.topics import INTAKE_EVENTS
from shared.service_app import build_service_app


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()
    return build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[INTAKE_EVENTS],
        handlers={"claim.submitted": open_review(settings.departments_by_kind, settings.task_days)},
        routers=[router],
        description="Joint review (联审): parallel department decisions on each claim.",
    )
