-- Responses to creating POSTs, kept for a day by the caller's Idempotency-Key
-- so a retried request gets the first answer instead of a second object.
CREATE TABLE api_idempotency (
    account_id   bigint NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    status       int,   -- NULL while the first request is still running
    content_type text,
    location     text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
