"""Every CLAIMFLOW_* variable that docker-compose.yml, the Dockerfile, the docs or the dev
stack name is read by something: a service's settings, or (for the tooling's own few)
the dev stack's or the tests' code. A misspelt variable is otherwise silently ignored
(docker-compose once set CLAIMFLOW_GATEWAY_FAILURE_RATE, which no setting reads)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

import services
import shared
from services.intake.config import IntakeSettings
from services.payout.config import PayoutSettings
from services.review.config import ReviewSettings
from shared.config import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bCLAIMFLOW_[A-Z0-9_]*[A-Z0-9]\b")
# How the tooling reads its variables: os.environ / getenv / a typer option's envvar.
TOOLING_READ = re.compile(
    r"""(?:environ\.get\(|environ\[|getenv\(|envvar=)\s*["'](CLAIMFLOW_[A-Z0-9_]+)["']"""
)


def named_in(path: Path) -> set[str]:
    return set(NAME.findall(path.read_text(encoding="utf-8")))


def sources() -> dict[str, set[str]]:
    files = [
        ROOT / "docker-compose.yml",
        ROOT / "deploy" / "Dockerfile",
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    named = {str(f.relative_to(ROOT)): named_in(f) for f in files}
    # What the dev stack hands to the service processes (the demo's gateway rates, ...).
    for f in sorted((ROOT / "shared" / "devstack").glob("*.py")):
        handed = set(re.findall(r"""["'](CLAIMFLOW_[A-Z0-9_]+)["']\s*:""", f.read_text()))
        if handed:
            named[str(f.relative_to(ROOT))] = handed
    return named


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of the project: all modules of shared/ and services/ are
    imported, then BaseSettings' subclasses collected (the services' and, e.g., the
    authentication's CLAIMFLOW_AUTH_*)."""
    for package in (shared, services):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):  # that one runs the service
                importlib.import_module(module.name)
    found: list[type[BaseSettings]] = []
    todo: list[type[BaseSettings]] = [BaseSettings]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.split(".")[0] in ("shared", "services"):
                found.append(sub)
            todo.append(sub)
    return found


def settings_variables() -> set[str]:
    names: set[str] = set()
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, info in cls.model_fields.items():
            names.add((prefix + (info.alias or field_name)).upper())
    return names


def tooling_variables() -> set[str]:
    names: set[str] = set()
    for folder in ("shared", "tests", "bench"):
        for f in (ROOT / folder).rglob("*.py"):
            names |= set(TOOLING_READ.findall(f.read_text(encoding="utf-8")))
    return names


def test_the_sources_are_found_and_name_variables() -> None:
    named = sources()
    assert "CLAIMFLOW_DATABASE_URL" in named["docker-compose.yml"]
    assert "CLAIMFLOW_HTTP_HOST" in named["deploy/Dockerfile"]
    assert "CLAIMFLOW_PORT_BASE" in tooling_variables()
    assert "CLAIMFLOW_GATEWAY_RETURN_RATE" in settings_variables()
    assert {ServiceSettings, IntakeSettings, ReviewSettings, PayoutSettings} <= set(
        settings_classes()
    )


@pytest.mark.parametrize("source", sorted(sources()))
def test_every_variable_named_is_read(source: str) -> None:
    read = settings_variables() | tooling_variables()
    unread = sorted(sources()[source] - read)
    assert not unread, f"{source} names variables nothing reads: {unread}"
