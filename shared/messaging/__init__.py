"""Transactional outbox, idempotent batch consumer, dead letters."""
