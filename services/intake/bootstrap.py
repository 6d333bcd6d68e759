"""Wires intake: settings, routes, event handlers, and the shared service runtime."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.intake.config import IntakeSettings
from services.intake.entrypoints.http import router
from services.intake.service_layer.handlers import SERVICE, TRACKED_EVENTS, track_event
from shared.contracts.topics import PAYOUT_EVENTS, REVIEW_EVENTS
from shared.service_app import build_service_app


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    return build_service_app(
        name=SERVICE,
        settings=settings,
        migrations=Path(__file__).parent / "migrations",
        subscribe_to=[REVIEW_EVENTS, PAYOUT_EVENTS],
        handlers={event_type: track_event for event_type in TRACKED_EVENTS},
        routers=[router],
        description="Tax window: register claims and answer where each claim is.",
    )
