from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.contracts import BankAccount


@dataclass(frozen=True)
class RegisterVatRefund:
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
