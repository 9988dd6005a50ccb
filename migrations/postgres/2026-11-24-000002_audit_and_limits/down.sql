ALTER TABLE outbox DROP COLUMN user_id;
DROP TABLE rate_limits;
DROP TABLE events;
