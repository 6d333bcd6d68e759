#!/bin/bash
# One-shot job of docker-compose.yml (service kafka-init), run in the apache/kafka image
# against the brokers' BROKER listener as the super user `admin` (SASL/PLAIN; its
# password is in the brokers' JAAS configuration and in ADMIN_PASSWORD here only):
#
#   1. the topics of shared/contracts/topics.py (12 partitions: a group of up to 12 instances per service shares them; 3 replicas, 2 in sync);
#   2. one SCRAM-SHA-256 user per service, its password from PASSWORD_<SERVICE> (the
#      same variable the service gets as CLAIMFLOW_KAFKA_SASL_PASSWORD);
#   3. the ACLs: each service's principal may write its own topic and the dead-letter
#      topic, read the topics it consumes (services/*/subscriptions.py) and use its own
#      consumer group — nothing else (the brokers deny whatever no ACL allows).
#
# tests/unit/test_compose_kafka_acls.py compares the `allow` lines below with what the
# code produces and consumes: a new subscription without its grant fails that test.
# Idempotent: topics --if-not-exists, passwords set again, ACLs added again. It never
# removes a grant: revoke one by hand (kafka-acls.sh --remove). docs/audit.md.
set -euo pipefail

KAFKA=/opt/kafka/bin
BOOTSTRAP=kafka:9091,kafka-2:9091,kafka-3:9091
ADMIN=/tmp/admin.properties

umask 077
cat > "$ADMIN" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${ADMIN_PASSWORD:?}";
PROPERTIES

for topic in claimflow.intake.events.v1 claimflow.review.events.v1 claimflow.payout.events.v1 claimflow.dead-letter.v1; do
  "$KAFKA/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" \
    --create --if-not-exists --topic "$topic" --partitions 12 --replication-factor 3 \
    --config min.insync.replicas=2
done

# scram_user <name> <password>: (re)sets the user's SCRAM-SHA-256 credential. The
# password must not contain ',', '[' or ']' (kafka-configs' list syntax).
scram_user() {
  "$KAFKA/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" \
    --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-256=[iterations=8192,password=$2]"
}

scram_user intake "${PASSWORD_INTAKE:?}"
scram_user review "${PASSWORD_REVIEW:?}"
scram_user payout "${PASSWORD_PAYOUT:?}"

# allow <service> <operation> --topic|--group <name>: one literal grant to User:<service>.
# Write and Read imply Describe (metadata, log-end offsets); Read on a group covers
# joining it and committing offsets.
allow() {
  "$KAFKA/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" \
    --add --allow-principal "User:$1" --operation "$2" "$3" "$4" \
    --resource-pattern-type literal
}

# intake: its claim events and dead letters; consumes review's and payout's events.
allow intake Write --topic claimflow.intake.events.v1
allow intake Write --topic claimflow.dead-letter.v1
allow intake Read --topic claimflow.review.events.v1
allow intake Read --topic claimflow.payout.events.v1
allow intake Read --group intake

# review: its review events and dead letters; consumes intake's events.
allow review Write --topic claimflow.review.events.v1
allow review Write --topic claimflow.dead-letter.v1
allow review Read --topic claimflow.intake.events.v1
allow review Read --group review

# payout: its payout events and dead letters; consumes intake's and review's events.
allow payout Write --topic claimflow.payout.events.v1
allow payout Write --topic claimflow.dead-letter.v1
allow payout Read --topic claimflow.intake.events.v1
allow payout Read --topic claimflow.review.events.v1
allow payout Read --group payout

"$KAFKA/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" --describe
"$KAFKA/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" --list
