"""End-to-end tier. The service fixtures live in tests/conftest.py: the browser tier
shares the same session stack."""

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.devstack.stack import StackConfig
from tests.tokens import AUDITOR


@pytest.fixture
async def client(infra: StackConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Requests carry the auditor's token unless they name someone else: reads need a
    token too, and the auditor reads everything and may change nothing."""
    async with httpx.AsyncClient(timeout=30, headers=dict(AUDITOR)) as c:
        yield c
