-- Bumped when a user's password changes: tokens issued before carry an
-- older version and are refused.
ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version BIGINT NOT NULL DEFAULT 0;
