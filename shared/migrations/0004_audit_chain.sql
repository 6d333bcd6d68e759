-- Issue 12: the audit chain (shared/audit/chain.py, docs/audit.md), in every service's
-- schema. Each chain (a claim, a fund, a payout) is a sequence of entries whose hash
-- covers the previous entry's hash and the entry's canonical body (RFC 8785 JSON as
-- text: jsonb would reorder and re-space it, and the hash would no longer recompute).

CREATE TABLE audit_heads (
    -- The newest entry of each chain. Writers lock this row (SELECT ... FOR UPDATE) to
    -- append, so two transactions on one chain serialise instead of forking it.
    chain_id text   PRIMARY KEY,
    seq      bigint NOT NULL CHECK (seq >= 0),
    hash     text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);

CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    chain_id    text        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq >= 1),
    occurred_at timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    -- The canonical body; it repeats chain_id, seq, occurred_at, actor and action, so the
    -- hash covers them (the columns are for queries and are checked against it).
    body        text        NOT NULL,
    prev_hash   text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- A second writer that got past the lock (or a bug) fails loudly here.
    CONSTRAINT audit_log_chain_seq UNIQUE (chain_id, seq)
);

-- Append-only: no role, the owner included, changes or removes an entry through SQL
-- without first disabling this trigger (which the seals then catch: docs/audit.md).
CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- A head only moves forward, one entry at a time, and is never removed.
CREATE FUNCTION audit_heads_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.chain_id <> OLD.chain_id OR NEW.seq <= OLD.seq THEN
        RAISE EXCEPTION 'audit_heads only move forward: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_heads_forward BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_forward_only();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- The service's role needs INSERT (and SELECT) only; the per-service roles (issue 11)
-- are granted no more. PUBLIC never had more than the owner grants.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
