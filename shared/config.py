"""Settings common to every service, read from CLAIMFLOW_* environment variables."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAIMFLOW_", extra="ignore")

    database_url: str = "postgresql://claimflow@127.0.0.1:15432/claimflow"
    kafka_bootstrap: str = "127.0.0.1:19092"
    # How the service authenticates to the broker (shared/messaging/kafka_security.py).
    # The embedded tansu stack: none of these (PLAINTEXT on loopback). docker-compose's
    # Apache Kafka: SCRAM-SHA-256 as the service's own principal, whose ACLs let it write
    # only its own topics and read what it consumes (docs/audit.md).
    kafka_sasl_mechanism: Literal["", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    """Empty: no SASL. Else the SASL mechanism, with the username and password below."""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_tls: bool = False
    """TLS to the broker (SASL_SSL with a mechanism, SSL without)."""
    kafka_tls_cafile: str = ""
    """The CA bundle that signed the brokers' certificates; empty: the system's."""
    http_host: str = "127.0.0.1"
    http_port: int = 8100

    # tansu holds every fetch for the full fetch_max_wait_ms even when data is there,
    # so the default Kafka 500 ms would cost half a second per hop.
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    consumer_batch_max_records: int = Field(default=500, ge=1)
    consumer_batch_timeout_ms: int = Field(default=5, ge=1)
    """FastStream's pause after a fetch wait that brought nothing. With the wait made
    long (consumer_idle_wait_ms) the pause comes once per idle wait, and an event that
    arrives during it waits this long at most (shared/messaging/fetch.py)."""
    consumer_idle_wait_ms: int = Field(default=1000, ge=1)
    """How long one fetch call waits for records; it returns as soon as records come,
    so this costs no latency, and an idle consumer wakes up once per this long."""
    consumer_retry_backoff_s: float = Field(default=1.0, gt=0)
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1000)
    """How long the group coordinator waits for a silent (killed) member before handing
    its partitions on. tansu holds a re-joining member for about 1.5x this after a crash;
    the embedded stack sets 3000 (docs/resilience.md). Apache Kafka refuses values below
    its group.min.session.timeout.ms (6000 by default)."""
    consumer_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    consumer_static_membership: bool = False
    """Kafka static group membership (KIP-345): the consumer joins as
    ``<service>-<host name>``; a container restarted under the same host name takes its
    partitions back without a rebalance and without waiting for its old session. On by
    docker-compose (Apache Kafka); off in the embedded stack (tansu joined slower with it,
    docs/resilience.md). A static member sends no LeaveGroup when it stops: a replica
    removed for good hands its partitions on only after its session timeout."""
    consumer_member_dir: str | None = None
    """Where the consumer notes its group member id at every assignment, so that a
    supervisor can take a killed process out of its group at once instead of after its
    session (shared/messaging/membership.py). The embedded stack sets it."""

    outbox_batch_size: int = Field(default=1000, ge=1)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    """Fallback polling; the relay is normally woken by LISTEN/NOTIFY."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Requests with a larger body are refused (413) before it is read in full."""

    db_pool_min: int = 2
    db_pool_max: int = 10
    consumer_stall_after_s: float = Field(default=60.0, gt=0)
    """/health reports the consumer stuck (503) when messages wait and its position has not
    moved for this long (or it holds no partitions); twice this long, the process exits."""
    consumer_watch_interval_s: float = Field(default=5.0, gt=0)
    """How often the consumer's lag and position are sampled."""
    consumer_stall_exit: bool = True
    """Exit (code 75) on a confirmed stall so the supervisor restarts the service."""
    outbox_retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Published outbox rows are kept this long, so that rows a broker lost can be
    published again (by the relay, or `claimflow outbox replay`); then deleted."""
    outbox_broker_check_interval_s: float = Field(default=2.0, gt=0)
    """How often the relay compares the broker's log-end offsets and cluster id with what
    the broker acknowledged to it (docs/resilience.md, "The broker loses data")."""
    outbox_max_attempts: int = Field(default=5, ge=1)
    """Sends of one outbox row that fail for that row's own reason before it is
    quarantined (dead-lettered, re-drivable) so the rows behind it flow."""

    # Issue 12 (docs/audit.md): the service's Ed25519 key, the public keys it trusts,
    # and where its audit seals go.
    event_signing_key: str = ""
    """Path of this service's private key file (``shared.audit.keys``): it signs every
    event the service publishes and seals its audit chain heads."""
    event_public_keys: str = ""
    """Path of ``public.json``: the keys whose events (and seals) this service accepts."""
    event_signatures: Literal["required", "off"] = "required"
    """``required``: an event without a valid signature of a service entitled to its type
    is dead-lettered; the service refuses to start without ``event_public_keys``. ``off``
    only for tools and tests that feed hand-made events."""
    audit_seal_dir: str = ""
    """Folder the seals are written to (``<dir>/<service>/*.json``); empty: no seals."""
    audit_seal_interval_s: float = Field(default=300.0, gt=0)
    """How often the chain heads are sealed and the service's chains verified."""

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> Self:
        # A mechanism without credentials would fail at the first connection, as a
        # broker error far from its cause: refuse at start, naming the variables.
        if self.kafka_sasl_mechanism and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"CLAIMFLOW_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism} needs "
                "CLAIMFLOW_KAFKA_SASL_USERNAME and CLAIMFLOW_KAFKA_SASL_PASSWORD"
            )
        if self.kafka_tls_cafile and not self.kafka_tls:
            raise ValueError("CLAIMFLOW_KAFKA_TLS_CAFILE is set but CLAIMFLOW_KAFKA_TLS is not")
        return self
