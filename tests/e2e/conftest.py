from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.devstack import stack


@pytest.fixture(scope="session")
def services(infra: stack.StackConfig) -> Iterator[stack.StackConfig]:
    """The three services as separate processes against the test infra."""
    pids: list[int] = []
    try:
        for name in stack.SERVICES:
            pids.append(stack.start_service(infra, name))
        stack.wait_healthy(infra)
        yield infra
    finally:
        for pid in pids:
            stack.stop_pid(pid)
