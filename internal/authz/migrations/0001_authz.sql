-- The p rules: which actions a role allows. Small (roles × actions) and
-- editable: every change makes every node reload (see authz_changes).
CREATE TABLE authz_policies (
    role   text NOT NULL CHECK (role ~ '^[a-z][a-z0-9_]{0,31}$'),
    action text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    PRIMARY KEY (role, action)
);
INSERT INTO authz_policies (role, action) VALUES
    ('admin', 'unit.read'), ('admin', 'unit.manage'), ('admin', 'member.manage'),
    ('admin', 'member.read_mobile'), ('admin', 'role.grant'), ('admin', 'stats.read'),
    ('leader', 'unit.read'), ('leader', 'member.read_mobile'), ('leader', 'task.dispatch'),
    ('leader', 'notice.send'), ('leader', 'stats.read'), ('leader', 'task.handle'),
    ('staff', 'unit.read'), ('staff', 'task.handle'),
    ('grid_worker', 'unit.read'), ('grid_worker', 'incident.report'), ('grid_worker', 'task.handle'),
    ('auditor', 'unit.read'), ('auditor', 'audit.read'), ('auditor', 'stats.read');

-- The g rules: account holds role at unit, and so in the unit's whole subtree.
-- No foreign keys: accounts and org_units belong to other packages, which may
-- migrate after this one; org removes the grants of members it removes.
CREATE TABLE authz_grants (
    account_id bigint NOT NULL,
    role       text   NOT NULL CHECK (role ~ '^[a-z][a-z0-9_]{0,31}$'),
    unit_id    bigint NOT NULL,
    granted_by bigint,                       -- NULL: the system (an import)
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, role, unit_id)
);
CREATE INDEX authz_grants_unit ON authz_grants (unit_id);

-- Change tracking. Every statement that changes grants or policies bumps the
-- one version row and logs which accounts changed (NULL: too many to list, or
-- a policy change: reload everything). Updating the single row serialises the
-- writers, so versions become visible in order and the log has no gaps: a node
-- at version v that reads the changes after v and then the grants is current.
CREATE TABLE authz_state (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint NOT NULL
);
INSERT INTO authz_state (id, version) VALUES (true, 0);

CREATE TABLE authz_changes (
    version     bigint PRIMARY KEY,
    account_ids bigint[],                    -- NULL: reload everything
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX authz_changes_at ON authz_changes (changed_at);

CREATE FUNCTION authz_record_change(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE authz_state SET version = version + 1 RETURNING version INTO v;
    INSERT INTO authz_changes (version, account_ids) VALUES (v, ids);
END $$;

-- Statement-level, so that a COPY of a million grants is one change (logged
-- as "everything") rather than a million.
CREATE FUNCTION authz_grants_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n   bigint;
    ids bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM authz_record_change(NULL);
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO n FROM (SELECT 1 FROM new_rows LIMIT 1001) x;
        IF n BETWEEN 1 AND 1000 THEN
            SELECT array_agg(DISTINCT account_id) INTO ids FROM new_rows;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO n FROM (SELECT 1 FROM old_rows LIMIT 1001) x;
        IF n BETWEEN 1 AND 1000 THEN
            SELECT array_agg(DISTINCT account_id) INTO ids FROM old_rows;
        END IF;
    ELSE -- UPDATE: an account id may change, so both sides count
        SELECT count(*) INTO n FROM (SELECT 1 FROM old_rows LIMIT 501) x;
        IF n BETWEEN 1 AND 500 THEN
            SELECT array_agg(DISTINCT account_id) INTO ids
            FROM (SELECT account_id FROM old_rows UNION SELECT account_id FROM new_rows) x;
        END IF;
    END IF;
    IF n > 0 THEN
        PERFORM authz_record_change(ids);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER authz_grants_insert AFTER INSERT ON authz_grants
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION authz_grants_changed();
CREATE TRIGGER authz_grants_delete AFTER DELETE ON authz_grants
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION authz_grants_changed();
CREATE TRIGGER authz_grants_update AFTER UPDATE ON authz_grants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION authz_grants_changed();
CREATE TRIGGER authz_grants_truncate AFTER TRUNCATE ON authz_grants
    FOR EACH STATEMENT EXECUTE FUNCTION authz_grants_changed();

CREATE FUNCTION authz_policies_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM authz_record_change(NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER authz_policies_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON authz_policies
    FOR EACH STATEMENT EXECUTE FUNCTION authz_policies_changed();

-- The audit log: grants, revocations and denied requests. Append-only: the
-- trigger below refuses UPDATE, DELETE and TRUNCATE for every role but a
-- superuser who drops it on purpose.
CREATE TABLE authz_audit (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    actor_id          bigint,                -- NULL: the system
    kind              text NOT NULL CHECK (kind IN ('grant', 'revoke', 'denied')),
    action            text NOT NULL,
    unit_id           bigint,                -- target unit; NULL when there is none
    unit_path         bigint[] NOT NULL DEFAULT '{}', -- target unit and its ancestors when written
    target_account_id bigint,
    role              text,
    client_addr       text NOT NULL DEFAULT '',
    request_id        text NOT NULL DEFAULT '',
    detail            text NOT NULL DEFAULT ''
);
-- Auditors see entries whose unit_path overlaps the roots of their reach.
CREATE INDEX authz_audit_path ON authz_audit USING gin (unit_path);
CREATE INDEX authz_audit_actor ON authz_audit (actor_id, id);

CREATE FUNCTION authz_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'authz_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER authz_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON authz_audit
    FOR EACH STATEMENT EXECUTE FUNCTION authz_audit_append_only();
