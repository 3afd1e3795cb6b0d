CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    email         TEXT,
    password_hash TEXT    NOT NULL,
    created_time  BIGINT  NOT NULL,
    updated_time  BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS posts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title        TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    created_time BIGINT  NOT NULL,
    updated_time BIGINT  NOT NULL
);

CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, id);
