-- The audit trail (SPEC §9) and the per-client rate-limit counters, which live in the
-- database so that every app instance sees the same counts.

-- One row per recovery, sign-in or admin event. Never a token, a password or a session id.
-- `email` is the account's address at the time (NULL when no account was involved), so the
-- trail still reads right after an address changes. No foreign keys on purpose: a trail
-- outlives what it mentions, and a key check (a row lock on `users` on Postgres) would make
-- a failed sign-in for a registered address measurably slower than for an unknown one.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id BIGINT NULL,
    actor_id BIGINT NULL,
    email TEXT NULL,
    detail TEXT NULL,
    client_ip TEXT NULL,
    user_agent TEXT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_user_id ON events (user_id, created_at);
CREATE INDEX events_kind ON events (kind, created_at);

-- Hits per client and limit group in fixed windows (window = unix seconds / length);
-- the limiter weighs the previous window in, so a burst cannot straddle a boundary.
-- `prev_hits` is the previous window's count, copied when the row is made, so that a hit
-- is one statement.
CREATE TABLE rate_limits (
    bucket TEXT NOT NULL,
    window_no BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    prev_hits BIGINT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (bucket, window_no)
);
CREATE INDEX rate_limits_expires_at ON rate_limits (expires_at);

-- Which account an email concerns, for the "mailed" and "mail failed" audit events.
ALTER TABLE outbox ADD COLUMN user_id BIGINT NULL;
