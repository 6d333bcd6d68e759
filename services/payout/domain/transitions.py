"""Every change of a payout's status, as a value checked against the one table.

``TRANSITIONS`` (``domain.model``) is the state machine of docs/payout.md. A ``Move``
is one status write: constructing it checks it against that table (or, for a new
payout, against ``INITIAL``), so an illegal write fails before any SQL runs. The payout
store (``adapters/payouts.py``) writes a status only from a ``Move``, and only where the
row still has the move's source status; ``tests/unit/test_payout_transitions.py`` proves
both by enumeration.

``apply_notice`` is the bank's side of the table: where a notice about (issue, attempt)
moves a payout, and the hop it records (``NOTICE_HOPS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from services.payout.domain.model import (
    TRANSITIONS,
    PayoutStatus,
    notice_position,
    target_of_notice,
)

INITIAL = frozenset({PayoutStatus.QUEUED, PayoutStatus.WITHHELD})
"""A new payout is written queued (reserving moves it on in the same transaction), or
withheld when the approval is not what intake received (issue 12 item 5)."""


class IllegalTransition(ValueError):
    """A status write the state machine does not allow (a bug, never input)."""


@dataclass(frozen=True)
class Move:
    """One status write of one payout: ``source`` → ``target`` (source None: a new row)."""

    source: PayoutStatus | None
    target: PayoutStatus

    def __post_init__(self) -> None:
        allowed = INITIAL if self.source is None else TRANSITIONS[self.source]
        if self.target not in allowed:
            raise IllegalTransition(f"a payout never moves from {self.source} to {self.target}")


def move(current: PayoutStatus | str | None, target: PayoutStatus) -> Move:
    """The move of a payout in status ``current`` (a row's text is accepted) to ``target``."""
    return Move(None if current is None else PayoutStatus(current), target)


# --- the bank's notices -------------------------------------------------------------

NOTICE_HOPS: dict[PayoutStatus, str] = {
    PayoutStatus.ACCEPTED: "accepted",
    PayoutStatus.SENT: "sent",
    PayoutStatus.PAID: "arrived",
    PayoutStatus.RETRYING: "failed_transient",
    PayoutStatus.FAILED: "failed",
    PayoutStatus.RETURNED: "returned",
}
"""Every status a bank notice can move a payout to, and the hop it records."""


class BankNotice(Protocol):
    """What the domain reads of a notice (``adapters.gateway.Notice`` has it)."""

    @property
    def issue_no(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def hop(self) -> str: ...
    @property
    def permanent(self) -> bool: ...


@dataclass(frozen=True)
class Advance:
    """A notice that moves the payout: the move and the hop it records."""

    move: Move
    hop: str


Verdict = Literal["keep", "discard"] | Advance


def apply_notice(
    status: PayoutStatus | str,
    issue_no: int,
    attempts: int,
    notice: BankNotice,
    *,
    max_attempts: int,
) -> Verdict:
    """What a bank notice does to a payout in ``status`` at (``issue_no``, ``attempts``).

    ``keep``: leave it unacknowledged, it is delivered again (ahead of the row, or an
    earlier attempt of an issue in doubt that the bank may hold). ``discard``:
    acknowledge it, nothing changes (a late copy, a repeat, a move backwards).
    """
    current = PayoutStatus(status)
    position = notice_position(issue_no, attempts, notice.issue_no, notice.attempt)
    in_doubt = current in (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN)
    if position == "ahead" or (position == "behind" and in_doubt and notice.issue_no == issue_no):
        # Ahead: the bank has an attempt the row has not recorded. An earlier attempt of
        # this issue while the current one is in doubt: the bank may hold that earlier
        # one (it was on its way when the bank was asked). Both wait for the row.
        return "keep"
    if position == "behind":
        return "discard"
    target = target_of_notice(
        current,
        notice.hop,
        permanent=notice.permanent,
        attempts=notice.attempt,
        max_attempts=max_attempts,
    )
    if target is None:
        return "discard"
    return Advance(Move(current, target), NOTICE_HOPS[target])
