-- The admin area (issue 4): what its pages show and filter on.

-- When the password was last set through a reset link (the users list shows it).
ALTER TABLE users ADD COLUMN last_reset_at TIMESTAMP NULL;

-- The admin who asked for a reset email, NULL for the public forms; the worker copies it
-- into the `reset_requested` event.
ALTER TABLE reset_requests ADD COLUMN actor_id BIGINT NULL;

-- The audit log is read newest first, with keyset pagination on (created_at, id), filtered
-- by kind, account or client address: each filter gets an index in that order, so a page is
-- an index range scan however large the table is.
DROP INDEX events_created_at;
DROP INDEX events_kind;
DROP INDEX events_user_id;
CREATE INDEX events_created_at ON events (created_at, id);
CREATE INDEX events_kind ON events (kind, created_at, id);
CREATE INDEX events_user_id ON events (user_id, created_at, id);
CREATE INDEX events_client_ip ON events (client_ip, created_at, id);

-- The outbox page lists one status newest first; a user's unsent reset emails are dropped
-- when their links die.
CREATE INDEX outbox_status ON outbox (status, id);
CREATE INDEX outbox_user_id ON outbox (user_id);
