ALTER TABLE reset_tokens DROP COLUMN openings;
ALTER TABLE sessions DROP COLUMN credential_generation;
ALTER TABLE users DROP COLUMN credential_generation;
