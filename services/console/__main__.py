"""``python -m services.console``: the staff console on CLAIMFLOW_CONSOLE_HOST:PORT."""

from __future__ import annotations

import logging

import uvicorn

from services.console.app import create_app
from services.console.config import ConsoleSettings


def main() -> None:
    settings = ConsoleSettings()  # session_secret from the environment
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s console %(levelname)s %(name)s %(message)s"
    )
    # access_log off: uvicorn's access log writes full URLs with their query strings
    # (a USCC search); the console logs what it needs itself, never a bank account.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
