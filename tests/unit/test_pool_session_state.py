"""Issue 15, item 3: the pool no longer resets a session on release (shared/db.py
keep_session). That is safe only while code on pooled connections creates no session
state; this test reads the code and names any statement that would."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Statements whose effect outlives the transaction they run in (the project writes SQL
# keywords in capitals, which keeps prose like "set of" or "listen on" out).
SESSION_STATE = {
    "session setting": re.compile(r"""["']\s*SET\s+(?!LOCAL\b)(SESSION\s+)?\w"""),
    "set_config(..., false)": re.compile(r"set_config\([^)]*,\s*false\s*\)", re.I),
    "session advisory lock": re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\("),
    "LISTEN": re.compile(r"""["']\s*LISTEN\b|\.add_listener\("""),
    "cursor WITH HOLD": re.compile(r"CURSOR\s+WITH\s+HOLD"),
    "temporary table": re.compile(r"CREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\s+TABLE"),
    "prepared transaction": re.compile(r"PREPARE\s+TRANSACTION"),
}

# Where session state is created on connections that are not the pool's, or undone
# before the connection goes back (each place says why).
ALLOWED = {
    # migrate(): its own connection (advisory lock, SET search_path), closed after.
    ("shared/db.py", "session advisory lock"),
    ("shared/db.py", "session setting"),
    # The gauge lock is unlocked before release; a connection that could not be
    # unlocked is terminated (SingleExporter.release).
    ("shared/table_gauges.py", "session advisory lock"),
    # The LISTEN connection (the outbox relay's, the payment loop's) is opened with
    # asyncpg.connect, not from the pool.
    ("shared/wakeup.py", "LISTEN"),
}


def session_state_in(text: str) -> list[str]:
    return [kind for kind, pattern in SESSION_STATE.items() if pattern.search(text)]


def test_the_scanner_sees_session_state() -> None:
    """The patterns catch what they are meant to (and not an UPDATE's SET)."""
    assert session_state_in('await conn.execute("SET statement_timeout = 5")')
    assert session_state_in("await c.execute('SET SESSION search_path TO x')")
    assert session_state_in("SELECT pg_advisory_lock(1)")
    assert session_state_in('await conn.execute("LISTEN x")')
    assert session_state_in("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
    assert session_state_in("SELECT set_config('a.b', '1', false)")
    assert not session_state_in('await conn.execute("SET LOCAL statement_timeout = 5")')
    assert not session_state_in('"UPDATE t SET x = 1"')
    assert not session_state_in("SELECT pg_try_advisory_xact_lock(1)")
    assert not session_state_in("SELECT set_config('a.b', '1', true)")


def test_no_session_state_on_pooled_connections() -> None:
    found = []
    for folder in ("shared", "services"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("shared/devstack/"):
                continue  # tools with connections of their own, not a service's pool
            for kind in session_state_in(path.read_text(encoding="utf-8")):
                if (rel, kind) not in ALLOWED:
                    found.append(f"{rel}: {kind}")
    assert not found, (
        "session state on what may be a pooled connection; the pool does not reset "
        f"sessions (shared/db.py keep_session): {found}"
    )
