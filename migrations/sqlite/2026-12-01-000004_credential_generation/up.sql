-- Issue 10: a reset, a password change or a disable ends everything that came before it,
-- even what was in flight.

-- Bumped by every change of what signs this account in (reset, password change, disable).
-- A session is written only for the generation its password was checked against and is
-- loaded only while the account is still at that generation.
ALTER TABLE users ADD COLUMN credential_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credential_generation BIGINT NULL;
-- Sessions signed in before this migration belong to generation 0, where every account
-- starts: nobody is signed out by the upgrade.
UPDATE sessions SET credential_generation = 0 WHERE user_id IS NOT NULL;

-- How often a live reset link was opened: the first few openings are audited, the rest
-- only counted, so one link opened in a loop grows no table.
ALTER TABLE reset_tokens ADD COLUMN openings BIGINT NOT NULL DEFAULT 0;
