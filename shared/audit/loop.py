"""The service's own audit loop: seal the chain heads, then verify the chains against
the seals and export the result (``claimflow_audit_breaks``; alert ``AuditChainBroken``).

An auditor's verification is ``claimflow audit verify`` (or the independent script in
docs/audit.md); this loop is the alarm that rings between audits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shared.audit.keys import KeyRing, ServiceKey
from shared.audit.seal import write_seal
from shared.audit.verify import verify_service
from shared.metrics import AUDIT_BREAKS, AUDIT_LAST_SEAL, AUDIT_VERIFICATIONS

if TYPE_CHECKING:
    from shared.service_app import ServiceRuntime

log = logging.getLogger(__name__)


async def seal_and_verify(runtime: ServiceRuntime) -> int:
    """One round; returns the number of breaks found."""
    settings = runtime.settings
    key = ServiceKey.load(settings.event_signing_key)
    keyring = KeyRing.load(settings.event_public_keys) if settings.event_public_keys else None
    seal_dir = Path(settings.audit_seal_dir)
    async with runtime.db.acquire() as conn:
        await write_seal(conn, service=runtime.name, key=key, directory=seal_dir)
        AUDIT_LAST_SEAL.labels(runtime.name).set(time.time())
        report = await verify_service(conn, runtime.name, seal_dir=seal_dir, keyring=keyring)
    AUDIT_BREAKS.labels(runtime.name).set(len(report.breaks))
    AUDIT_VERIFICATIONS.labels(runtime.name, "ok" if report.ok else "broken").inc()
    for b in report.breaks[:20]:
        log.error("audit chain break: %s", b.line())
    return len(report.breaks)


async def audit_loop(runtime: ServiceRuntime) -> None:
    while True:
        try:
            await seal_and_verify(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            AUDIT_VERIFICATIONS.labels(runtime.name, "error").inc()
            log.exception("%s: audit seal/verify round failed", runtime.name)
        await asyncio.sleep(runtime.settings.audit_seal_interval_s)
