"""Which failed sends count against an outbox row (five in a row quarantine it): its own
record errors always; other errors only when the broker took other rows in the same cycle;
the broker's own state never (a memory tansu just restarted answered some produces with
UnknownError, and two healthy rows were quarantined in stop 11's campaign)."""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from shared.messaging.outbox import _counts_against_row


def test_a_record_error_is_the_rows_own() -> None:
    too_big = kafka_errors.MessageSizeTooLargeError()
    assert _counts_against_row(too_big, others_went=False)
    assert _counts_against_row(too_big, others_went=True)


def test_the_brokers_state_is_never_the_rows_fault() -> None:
    for error in (
        kafka_errors.UnknownError(),
        kafka_errors.KafkaStorageError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.KafkaTimeoutError(),
    ):
        assert not _counts_against_row(error, others_went=True), error
        assert not _counts_against_row(error, others_went=False), error


def test_an_unexplained_error_counts_only_when_other_rows_went() -> None:
    odd = kafka_errors.PolicyViolationError()
    assert _counts_against_row(odd, others_went=True)
    assert not _counts_against_row(odd, others_went=False)
