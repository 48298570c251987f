CREATE TABLE accounts (
    id            bigserial PRIMARY KEY,
    login         text UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    mobile        text UNIQUE CHECK (mobile ~ '^1[0-9]{10}$'),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    password_hash text NOT NULL,
    superuser     boolean NOT NULL DEFAULT false,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (login IS NOT NULL OR mobile IS NOT NULL)
);

-- A session is one device's sign-in: the family of refresh tokens that
-- rotate from one login. Revoking it ends every token of the family.
CREATE TABLE auth_sessions (
    id             bigserial PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    device         text NOT NULL,
    client_addr    text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX auth_sessions_account ON auth_sessions (account_id, created_at DESC);

CREATE TABLE auth_refresh_tokens (
    hash       bytea PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES auth_sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);
CREATE INDEX auth_refresh_tokens_session ON auth_refresh_tokens (session_id);

-- Failed-login counters, keyed 'login:<name>' or 'addr:<ip>'.
CREATE TABLE auth_throttle (
    key              text PRIMARY KEY,
    failures         int NOT NULL,
    first_failure_at timestamptz NOT NULL,
    blocked_until    timestamptz
);
