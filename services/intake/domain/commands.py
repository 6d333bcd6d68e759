from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from shared.contracts import BankAccount


@dataclass(frozen=True)
class RegisterVatRefund:
    kind: ClassVar[str] = "vat_refund"
    program_id: ClassVar[None] = None

    uscc: str
    enterprise_name: str
    tax_period: str
    end_credit_fen: int
    base_credit_fen: int
    input_ratio: Decimal
    tax_credit_rating: str
    requested_amount_fen: int
    payee: BankAccount
    registered_by: str
    documents_supplied: tuple[str, ...] = ()
    documents_promised: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisterSubsidy:
    kind: ClassVar[str] = "subsidy"

    uscc: str
    enterprise_name: str
    program_id: str
    requested_amount_fen: int
    payee: BankAccount
    registered_by: str
    documents_supplied: tuple[str, ...] = ()
    documents_promised: tuple[str, ...] = ()
    description: str | None = None


RegisterClaim = RegisterVatRefund | RegisterSubsidy


@dataclass(frozen=True)
class SupplyDocument:
    claim_id: uuid.UUID
    document_id: str
    recorded_by: str


@dataclass(frozen=True)
class WithdrawClaim:
    claim_id: uuid.UUID
    reason: str
    withdrawn_by: str
