"""Runs a service app under uvicorn with the service's settings."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from fastapi import FastAPI

from shared.config import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Marks the end of imports and app building in the log: bench.service_startup splits
    # the start-up time there (docs/resilience.md).
    log = logging.getLogger(__name__)
    log.info("imported, starting %s", app.title)
    if os.environ.get("CLAIMFLOW_WARM_SPARE") == "1":
        # A warm spare (shared/devstack/supervisor.py): imports done, nothing connected,
        # no port bound; it goes on when its supervisor writes a line, and ends on EOF.
        if not sys.stdin.readline().strip():
            log.info("warm spare not needed; exiting")
            return
        log.info("warm spare released, starting %s", app.title)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # libuv's event loop and the C HTTP parser: the same asyncio code (FastStream,
        # aiokafka and asyncpg run on it unchanged) for less CPU per request and per
        # awaited socket read (docs/performance.md).
        loop="uvloop",
        http="httptools",
        # Keep idle connections longer than clients do (httpx: 5 s, uvicorn's default is
        # also 5 s): otherwise a client may reuse a connection the server is closing at the
        # same moment and get "server disconnected" on a request it never sent.
        timeout_keep_alive=75,
    )
