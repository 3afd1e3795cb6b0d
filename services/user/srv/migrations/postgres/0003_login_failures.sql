-- Failed logins, shared by every user-srv instance on this store: per
-- account and source (scope 'pair') and per source (scope 'source', account
-- ''). Times are Unix milliseconds; rows older than the throttle's memory
-- are deleted as logins fail, and the table is capped.
CREATE TABLE IF NOT EXISTS login_failures (
    scope TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    failures BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    PRIMARY KEY (scope, account, source)
);
CREATE INDEX IF NOT EXISTS login_failures_last_failure ON login_failures (last_failure);
