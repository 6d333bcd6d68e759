"""Every payout status write goes through the one table (issue 10 item 2).

The table is ``TRANSITIONS`` (``services/payout/domain/model.py``); a status write is a
``Move`` (``domain/transitions.py``), which cannot be made for a pair the table does not
hold; and the only SQL in payout that writes ``payouts.status`` is in the payout store,
in functions that take a ``Move`` and bind its target (never a status literal).
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.payout.domain.model import TRANSITIONS, PayoutStatus
from services.payout.domain.transitions import (
    INITIAL,
    NOTICE_HOPS,
    Advance,
    IllegalTransition,
    Move,
    apply_notice,
    move,
)

PAYOUT = Path(__file__).parents[2] / "services" / "payout"
STORE = PAYOUT / "adapters" / "payouts.py"


def test_a_move_exists_for_every_pair_of_the_table_and_for_no_other() -> None:
    allowed: set[tuple[PayoutStatus | None, PayoutStatus]] = {
        (s, t) for s, targets in TRANSITIONS.items() for t in targets
    }
    allowed |= {(None, t) for t in INITIAL}
    sources: list[PayoutStatus | None] = [None, *PayoutStatus]
    for source, target in itertools.product(sources, PayoutStatus):
        if (source, target) in allowed:
            assert Move(source, target).target is target
            assert move(source.value if source else None, target) == Move(source, target)
        else:
            with pytest.raises(IllegalTransition):
                Move(source, target)
    assert set(TRANSITIONS) == set(PayoutStatus)


@dataclass(frozen=True)
class _Notice:
    issue_no: int
    attempt: int
    hop: str
    permanent: bool


@pytest.mark.parametrize("status", list(PayoutStatus))
def test_every_notice_moves_a_payout_only_along_the_table(status: PayoutStatus) -> None:
    for hop, permanent, attempt in itertools.product(
        ("accepted", "sent", "arrived", "failed", "returned"), (False, True), (1, 2, 3)
    ):
        verdict = apply_notice(status, 1, 2, _Notice(1, attempt, hop, permanent), max_attempts=3)
        if attempt > 2:
            assert verdict == "keep"  # ahead of the row
        elif attempt < 2:
            # An earlier attempt: kept while the current one is in doubt, else a late copy.
            in_doubt = status in (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN)
            assert verdict == ("keep" if in_doubt else "discard")
        elif isinstance(verdict, Advance):
            assert verdict.move.source is status
            assert verdict.move.target in TRANSITIONS[status]
            assert verdict.hop == NOTICE_HOPS[verdict.move.target]
        else:
            assert verdict == "discard"  # a repeat, or a move the table does not hold


def _sql_strings(node: ast.AST) -> list[str]:
    """The text of every string (f-strings with their literal parts) under ``node``."""
    found: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            found.append(sub.value)
        elif isinstance(sub, ast.JoinedStr):
            found.append(
                "".join(
                    v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                    for v in sub.values
                )
            )
    return found


def _writes_status(sql: str) -> bool:
    """An UPDATE of payouts that sets status, or an INSERT into payouts naming it."""
    flat = " ".join(sql.split())
    update = re.search(r"UPDATE payouts\b.*?\bSET\b(.*?)(\bWHERE\b|$)", flat, re.I)
    if update and re.search(r"(^|[\s,])status\s*=", update.group(1)):
        return True
    insert = re.search(r"INSERT INTO payouts\s*\((.*?)\)", flat, re.I)
    return bool(insert and re.search(r"\bstatus\b", insert.group(1)))


def _status_writes() -> list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef | None, str]]:
    writes = []
    for path in sorted(PAYOUT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for sql in _sql_strings(tree):
            if not _writes_status(sql):
                continue
            owner = next((f for f in functions if sql in _sql_strings(f)), None)
            writes.append((path, owner, sql))
    return writes


def test_every_status_write_takes_a_move_from_the_table() -> None:
    writes = _status_writes()
    assert writes, "no status write found: the scan is broken"
    for path, owner, sql in writes:
        where = f"{path.relative_to(PAYOUT)}: {' '.join(sql.split())[:90]}"
        assert path == STORE, f"status written outside the payout store: {where}"
        assert owner is not None, where
        params = owner.args.args + owner.args.kwonlyargs
        annotations = [ast.unparse(a.annotation) for a in params if a.annotation is not None]
        assert any("Move" in a for a in annotations), f"{owner.name} takes no Move: {where}"
        # The status is the move's target, bound as a parameter: never a literal.
        assert not re.search(r"status\s*=\s*'", sql), f"status literal in {owner.name}"
        assert not re.search(r"THEN\s*'\w+'", sql), f"status chosen in SQL in {owner.name}"
