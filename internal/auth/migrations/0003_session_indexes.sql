-- A new sign-in on a device revokes that device's open session: find it
-- without scanning the account's whole history. The janitor's sweeps use
-- the other two.
CREATE INDEX auth_sessions_open_device ON auth_sessions (account_id, device) WHERE revoked_at IS NULL;
CREATE INDEX auth_sessions_expires ON auth_sessions (expires_at);
CREATE INDEX auth_refresh_tokens_rotated ON auth_refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
