#!/bin/sh
# The postgres image runs this once, on an empty data volume (/docker-entrypoint-initdb.d),
# as the administrator (POSTGRES_USER): the claimflow roles and schemas of
# deploy/postgres/roles.sql, which shared/db_roles.py generates (docs/database-roles.md).
# Each password comes from the container's environment (docker-compose.yml); a missing
# one stops the initialisation.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v database="$POSTGRES_DB" \
  -v claimflow_intake_owner_password="${DB_PASSWORD_INTAKE_OWNER:?}" \
  -v claimflow_intake_password="${DB_PASSWORD_INTAKE:?}" \
  -v claimflow_review_owner_password="${DB_PASSWORD_REVIEW_OWNER:?}" \
  -v claimflow_review_password="${DB_PASSWORD_REVIEW:?}" \
  -v claimflow_payout_owner_password="${DB_PASSWORD_PAYOUT_OWNER:?}" \
  -v claimflow_payout_password="${DB_PASSWORD_PAYOUT:?}" \
  -v claimflow_bank_sim_owner_password="${DB_PASSWORD_BANK_SIM_OWNER:?}" \
  -v claimflow_bank_sim_password="${DB_PASSWORD_BANK_SIM:?}" \
  -f /claimflow/roles.sql
