from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.contracts import (
    BankAccount,
    ClaimSubmittedV1,
    EventEnvelope,
    ReviewDecidedV1,
    UnknownEventType,
)

PAYEE = BankAccount(
    bank_name="自贡银行", account_name="自贡长盈精密", account_number="6222020200001234567"
)


def test_envelope_round_trips_and_parses_its_payload() -> None:
    claim_id = uuid.uuid4()
    payload = ReviewDecidedV1(
        decision="approved",
        approved_amount_fen=123_45,
        claim_kind="vat_refund",
        payee=PAYEE,
        claim_received_at=datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
    )
    env = EventEnvelope.wrap(payload, claim_id=claim_id, producer="review")
    back = EventEnvelope.model_validate_json(env.to_bytes())
    assert back == env
    assert back.event_type == "review.decided" and back.version == 1
    assert back.correlation_id == claim_id  # a claim's story is correlated by its id
    assert back.parse_payload() == payload


def test_unknown_version_is_a_clear_error() -> None:
    env = EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="rejected",
            approved_amount_fen=0,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.now(UTC),
        ),
        claim_id=uuid.uuid4(),
        producer="review",
    )
    bumped = env.model_copy(update={"version": 99})
    with pytest.raises(UnknownEventType, match=r"review\.decided.*version 99"):
        bumped.parse_payload()


def test_envelope_rejects_naive_times() -> None:
    good = EventEnvelope.wrap(
        ClaimSubmittedV1(
            claim_kind="vat_refund",
            uscc="91510300MA62QQ7J1X"[:18],
            enterprise_name="x",
            tax_period="2026-10",
            requested_amount_fen=1,
            eligible_amount_fen=1,
            payee=PAYEE,
            registered_by="w1",
            received_at=datetime.now(UTC),
        ),
        claim_id=uuid.uuid4(),
        producer="intake",
    ).model_dump(mode="json")
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({**good, "occurred_at": "2026-11-01T10:00:00"})


def test_readers_ignore_fields_added_by_a_newer_producer() -> None:
    """Issue 9 item 13: a producer adding an optional field (to the envelope, the payload
    or a nested part) must not make its events unparsable at older consumers."""
    env = EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=500,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.now(UTC),
        ),
        claim_id=uuid.uuid4(),
        producer="review",
    ).model_dump(mode="json")
    newer = {
        **env,
        "trace_parent": "00-abc-01",
        "payload": {
            **env["payload"],
            "risk_score": 0.2,
            "payee": {**env["payload"]["payee"], "bank_branch": "自流井支行"},
        },
    }
    read = EventEnvelope.read(json.dumps(newer).encode())
    assert read.event_id == uuid.UUID(env["event_id"])
    payload = read.parse_payload()
    assert isinstance(payload, ReviewDecidedV1)
    assert payload.approved_amount_fen == 500 and payload.payee == PAYEE
    # What the readers ignore is still refused where people type it: an HTTP body's
    # bank account (payout's account correction) stays strict.
    with pytest.raises(ValidationError):
        BankAccount.model_validate({**PAYEE.model_dump(), "bank_branch": "x"})


def test_payloads_refuse_float_like_amounts() -> None:
    with pytest.raises(ValidationError):
        ReviewDecidedV1.model_validate(
            {
                "decision": "approved",
                "approved_amount_fen": 10.5,
                "claim_kind": "vat_refund",
                "payee": PAYEE.model_dump(),
                "claim_received_at": "2026-11-01T10:00:00Z",
            }
        )
