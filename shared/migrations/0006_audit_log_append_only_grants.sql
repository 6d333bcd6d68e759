-- The audit log is append-only for the service itself, not just by trigger: its runtime
-- role (claimflow_<schema>, docs/database-roles.md) keeps INSERT and SELECT on audit_log
-- and loses UPDATE, DELETE and TRUNCATE. Schemas without such a role (tests' throw-away
-- schemas) are left as they are; the triggers of 0004 refuse the same statements there.
DO $$
BEGIN
    EXECUTE format(
        'REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', 'claimflow_' || current_schema()
    );
EXCEPTION WHEN undefined_object THEN
    NULL;
END
$$;
