DROP TABLE sessions;
DROP TABLE outbox;
DROP TABLE reset_tokens;
DROP TABLE reset_requests;
DROP TABLE users;
