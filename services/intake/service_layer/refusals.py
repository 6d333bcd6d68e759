"""Intake's refusals: the one error hierarchy (``shared.problems``) with every broken
rule listed, so a window clerk fixes a claim in one go."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from services.intake.domain.model import PAYOUT_STARTED, ClaimStatus
from services.intake.domain.rules import Violation
from shared import problems


class Refusal(problems.Conflict):
    """A refusal naming every broken rule (``errors``), not only the first."""

    def __init__(self, detail: str, errors: Sequence[Violation], **extra: Any) -> None:
        first = errors[0] if errors else Violation("", "invalid", detail)
        super().__init__(detail, field=first.field, rule=first.rule)
        self.detail = detail
        self.errors = list(errors)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "errors": [e.as_dict() for e in self.errors],
            **{k: str(v) for k, v in self.extra.items()},
        }


class Invalid(Refusal):
    status_code = 422


class NotFound(Refusal):
    status_code = 404


def invalid(*violations: Violation) -> Invalid:
    return Invalid("validation failed", violations)


def no_claim(claim_id: uuid.UUID) -> NotFound:
    return NotFound(f"no claim {claim_id}", [Violation("claim_id", "exists", "no such claim")])


def closed(status: str, action: str) -> Refusal:
    """The claim is past the point where ``action`` is possible."""
    started = ClaimStatus(status) in PAYOUT_STARTED | {ClaimStatus.PAYOUT_REQUESTED}
    rule = "payout_started" if started else "claim_closed"
    return Refusal(
        f"cannot {action}: the claim is {status}",
        [Violation("claim_id", rule, f"the claim is {status}")],
    )


class DuplicateClaim(Refusal):
    def __init__(self, existing: uuid.UUID, field: str) -> None:
        super().__init__(
            "the enterprise already has a live claim of this kind for this "
            + ("program" if field == "program_id" else "tax period"),
            [
                Violation(
                    field,
                    "one_live_claim",
                    f"live claim {existing} must end (rejected, withdrawn, lapsed) first",
                )
            ],
            existing_claim_id=existing,
        )
        self.existing = existing
