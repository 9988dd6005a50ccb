-- Accounts, reset tokens, the mail outbox, queued reset requests and server-side sessions.
-- Timestamps are naive UTC (the pool sets TIME ZONE 'UTC'); ids are BIGINT everywhere.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT 0,
    disabled BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    password_changed_at TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP NULL
);

-- A "forgot password" request waiting for the worker. The request path writes only this
-- row, whatever the address, so a registered address costs the same as an unknown one.
CREATE TABLE reset_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX reset_requests_created_at ON reset_requests (created_at);

CREATE TABLE reset_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    sent_to TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP NULL
);
CREATE INDEX reset_tokens_user_id ON reset_tokens (user_id, created_at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    -- Subject and bodies, encrypted with a key derived from SECRET_KEY; emptied once
    -- the message is sent or its link has expired.
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP NULL,
    last_error TEXT NULL,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP NULL,
    expires_at TIMESTAMP NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash BLOB NOT NULL UNIQUE,
    user_id BIGINT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_id TEXT NULL,
    state TEXT NOT NULL,
    client_ip TEXT NULL,
    user_agent TEXT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
