"""What payout checks before it pays an approval (issue 12 item 5; pure, no I/O).

Review's ``review.decided`` says what to pay; intake's ``claim.submitted`` says what was
received: the kind and program, the enterprise (USCC), the eligible amount intake
computed and the bank account it registered. Payout pays an approval only when both
agree: the claim was seen submitted, same kind and program, same payee (or one two
finance people chose), approved amount ≤ eligible and ≤ the program's per-enterprise
cap. The cap across several claims of one enterprise is the ledger's job
(``adapters/intake_facts.charge_cap``, a CHECK in the database); here only a single
approval above the whole cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts import BankAccount
from shared.contracts.payout_events import WithheldReason
from shared.money import fen_to_yuan


@dataclass(frozen=True)
class Submitted:
    """What intake said when the claim was submitted."""

    claim_kind: str
    program_id: str | None
    uscc: str
    eligible_amount_fen: int
    payee: BankAccount


@dataclass(frozen=True)
class Approval:
    """What review approved (or what finance releases)."""

    claim_kind: str
    program_id: str | None
    amount_fen: int
    payee: BankAccount


@dataclass(frozen=True)
class Withhold:
    """Why an approval is not paid: ``reason`` for machines, ``detail`` for finance."""

    reason: WithheldReason
    detail: str


def check(
    submitted: Submitted | None,
    approval: Approval,
    cap_fen: int | None,
    *,
    payee_chosen_by_finance: bool = False,
) -> Withhold | None:
    """None when the approval may be paid as far as one claim can tell (the cap across
    claims is checked by the ledger afterwards); else why not, first reason first."""
    if submitted is None:
        return Withhold("awaiting_intake", "intake's claim.submitted has not been seen")
    if (submitted.claim_kind, submitted.program_id) != (approval.claim_kind, approval.program_id):
        return Withhold(
            "claim_mismatch",
            f"approved as {approval.claim_kind}/{approval.program_id}, submitted as "
            f"{submitted.claim_kind}/{submitted.program_id}",
        )
    if not payee_chosen_by_finance and approval.payee != submitted.payee:
        return Withhold(
            "payee_mismatch",
            f"payee {_account(approval.payee)} is not the account intake registered "
            f"({_account(submitted.payee)})",
        )
    if approval.amount_fen > submitted.eligible_amount_fen:
        return Withhold(
            "above_eligible",
            f"approved {fen_to_yuan(approval.amount_fen)} yuan, intake computed "
            f"{fen_to_yuan(submitted.eligible_amount_fen)} yuan eligible",
        )
    if cap_fen is not None and approval.amount_fen > cap_fen:
        return above_cap(approval.amount_fen, cap_fen, 0)
    return None


def above_cap(amount_fen: int, cap_fen: int, used_fen: int) -> Withhold:
    return Withhold(
        "above_cap",
        f"approved {fen_to_yuan(amount_fen)} yuan; the enterprise has "
        f"{fen_to_yuan(used_fen)} yuan of the program's {fen_to_yuan(cap_fen)} yuan "
        "per-enterprise cap admitted already",
    )


def _account(payee: BankAccount) -> str:
    # Masked like everywhere outside finance: the detail travels in events and logs.
    return f"{payee.account_name} ****{payee.account_number[-4:]} ({payee.bank_name})"
