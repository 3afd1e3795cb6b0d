//! The user store: embedded SQLite by default, PostgreSQL to scale.
//!
//! One implementation over sqlx's `Any` driver; the schema lives in
//! `migrations/sqlite` and `migrations/postgres` and is applied on start
//! (every instance may run it: migrations are idempotent and locked).
//! Several instances may share one store: SQLite in WAL mode with a busy
//! timeout (one host), PostgreSQL for many. SQL is only ever parameterised.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// A stored user. `password_hash` is a PHC string and never leaves the
/// service.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub created_time: i64,
    pub updated_time: i64,
    /// Tokens must carry this version; bumped on a password change.
    pub token_version: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is left out so that no debug print can leak it.
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("created_time", &self.created_time)
            .field("updated_time", &self.updated_time)
            .field("token_version", &self.token_version)
            .finish_non_exhaustive()
    }
}

/// Failed logins counted for one key (see [`crate::throttle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureCount {
    pub failures: u32,
    /// Unix milliseconds.
    pub last_failure_ms: i64,
}

/// A stored post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostRecord {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub content: String,
    pub created_time: i64,
    pub updated_time: i64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user name {0:?} is taken")]
    DuplicateName(String),
    #[error("user {0} does not exist")]
    NoSuchUser(i64),
    #[error("invalid --database_url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("unusable --data_dir {dir:?}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot open the store {url}: {reason}")]
    Unusable { url: String, reason: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The store URL used when none is given: an SQLite file in `data_dir`.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("user.db").display())
}

/// Users and posts in a SQL database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::BadUrl {
            url: redact(url),
            reason: "expected sqlite://PATH or postgres://USER@HOST:PORT/DB".into(),
        })
    }
}

/// `url` with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl StoreError {
    /// The user's input is wrong (`--database_url`, `--data_dir`): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(self, StoreError::BadUrl { .. } | StoreError::DataDir { .. })
    }
}

/// Creates `dir` (mode 0700) for the default SQLite store, if missing, and
/// makes an existing one private (0700) too, whoever created it (a script's
/// `mkdir -p`, a umask of 022): the store's files are 0600 in a 0700
/// directory. If it cannot (not the owner; a shared directory with the
/// sticky bit, such as /tmp, is left alone), it says so and goes on.
pub fn prepare_data_dir(dir: &Path) -> Result<(), StoreError> {
    create_private_dir(dir).map_err(|e| StoreError::DataDir {
        dir: dir.display().to_string(),
        reason: e,
    })?;
    make_dir_private(dir);
    Ok(())
}

fn make_dir_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    if mode & 0o1000 != 0 {
        tracing::warn!(
            "--data_dir {} is a shared directory (sticky bit, mode {:o}): left as it is; \
             the store's files are 0600, but others can see their names",
            dir.display(),
            mode & 0o7777
        );
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Ok(()) => tracing::info!(
            "--data_dir {} was mode {:o}; made it 0700",
            dir.display(),
            mode & 0o7777
        ),
        Err(e) => tracing::warn!(
            "--data_dir {} is mode {:o} and cannot be made 0700 ({e}): others may see \
             the store's file names",
            dir.display(),
            mode & 0o7777
        ),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err("exists and is not a directory".into()),
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the directory: {e}"))
}

/// Creates the database file 0600 if missing; an existing one, and its
/// `-wal` and `-shm`, readable by others are made 0600. (SQLite creates
/// `-wal` and `-shm` with the database file's mode.)
fn private_db_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(PathBuf::from(name));
    }
    for name in names {
        if let Ok(meta) = std::fs::metadata(&name)
            && meta.is_file()
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!("{} was readable by others; made it 0600", name.display());
            std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {}: {e}", name.display()))?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens the store at `url` (creating an SQLite file, mode 0600, and its
    /// directory, 0700, if needed) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        // One connection first: a corrupt file or a refused server is one
        // clear error now, not a pool retrying until it times out.
        probe(&url, backend).await?;
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(5));
        let options = match backend {
            Backend::Sqlite => options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // The file is in WAL mode already (`probe` switched it);
                    // the busy timeout makes writers wait for each other
                    // instead of failing.
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let pool = options.connect(&url).await?;
        match backend {
            // PostgreSQL migrations take an advisory lock; SQLite's do not, so
            // instances starting together can race to record the same
            // version. The loser's transaction rolls back; running again sees
            // the migration applied and moves on.
            Backend::Sqlite => {
                let mut attempt = 1;
                loop {
                    match SQLITE_MIGRATIONS.run(&pool).await {
                        Ok(()) => break,
                        Err(e) if attempt < 10 => {
                            tracing::debug!(
                                "schema migration raced another instance ({e}); retrying"
                            );
                            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                            attempt += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Failed logins of `account` from `source` (the pair) and of `source`
    /// over all accounts, as the throttle counts them.
    pub async fn login_failures(
        &self,
        account: &str,
        source: &str,
    ) -> Result<(Option<FailureCount>, Option<FailureCount>), StoreError> {
        let rows = sqlx::query(
            "SELECT scope, failures, last_failure FROM login_failures \
             WHERE (scope = 'pair' AND account = $1 AND source = $2) \
                OR (scope = 'source' AND account = '' AND source = $2)",
        )
        .bind(account)
        .bind(source)
        .fetch_all(&self.pool)
        .await?;
        let (mut pair, mut by_source) = (None, None);
        for row in rows {
            let count = FailureCount {
                failures: u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
                last_failure_ms: row.try_get("last_failure")?,
            };
            match row.try_get::<String, _>("scope")?.as_str() {
                "pair" => pair = Some(count),
                _ => by_source = Some(count),
            }
        }
        Ok((pair, by_source))
    }

    /// Counts a failed login for the pair and the source, at `now_ms`;
    /// counts whose last failure is before `forget_before_ms` start over.
    /// One statement per row, so instances failing at once all count.
    pub async fn count_login_failure(
        &self,
        account: &str,
        source: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (scope, account) in [("pair", account), ("source", "")] {
            sqlx::query(
                "INSERT INTO login_failures (scope, account, source, failures, last_failure) \
                 VALUES ($1, $2, $3, 1, $4) \
                 ON CONFLICT (scope, account, source) DO UPDATE SET \
                 failures = CASE WHEN login_failures.last_failure < $5 THEN 1 \
                                 ELSE login_failures.failures + 1 END, \
                 last_failure = $4",
            )
            .bind(scope)
            .bind(account)
            .bind(source)
            .bind(now_ms)
            .bind(forget_before_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A successful login: the pair's count goes.
    pub async fn clear_login_failures(
        &self,
        account: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM login_failures WHERE scope = 'pair' AND account = $1 AND source = $2",
        )
        .bind(account)
        .bind(source)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes counts last failed before `before_ms`, then all but the
    /// `keep` most recent; returns how many rows went.
    pub async fn expire_login_failures(
        &self,
        before_ms: i64,
        keep: i64,
    ) -> Result<u64, StoreError> {
        let old = sqlx::query("DELETE FROM login_failures WHERE last_failure < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM login_failures WHERE last_failure <= \
             (SELECT last_failure FROM login_failures ORDER BY last_failure DESC LIMIT 1 OFFSET $1)",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(old + over)
    }

    /// Rows in the failed-login table.
    pub async fn login_failure_rows(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM login_failures")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// One round trip to the database: the readiness check.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn create_user(
        &self,
        name: &str,
        email: Option<&str>,
        password_hash: &str,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (name, email, password_hash, created_time, updated_time) \
             VALUES ($1, $2, $3, $4, $4) \
             RETURNING id, name, email, password_hash, created_time, updated_time, token_version",
        )
        .bind(name)
        .bind(email)
        .bind(password_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::DuplicateName(name.to_string())
            }
            _ => StoreError::Database(e),
        })?;
        user(&row)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, email, password_hash, created_time, updated_time, token_version \
             FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user).transpose()
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, email, password_hash, created_time, updated_time, token_version \
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user).transpose()
    }

    /// Replaces the hash and revokes every token issued before; false if
    /// the user does not exist.
    pub async fn update_password(
        &self,
        id: i64,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_time = $2, \
                 token_version = token_version + 1 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the user and their posts; false if there was no such user.
    pub async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM posts WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Users with id > `after_id`, by id, at most `limit`.
    pub async fn list_users(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, email, password_hash, created_time, updated_time, token_version \
             FROM users WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user).collect()
    }

    pub async fn create_post(
        &self,
        user_id: i64,
        title: &str,
        content: &str,
        now: i64,
    ) -> Result<PostRecord, StoreError> {
        if self.user_by_id(user_id).await?.is_none() {
            return Err(StoreError::NoSuchUser(user_id));
        }
        let row = sqlx::query(
            "INSERT INTO posts (user_id, title, content, created_time, updated_time) \
             VALUES ($1, $2, $3, $4, $4) \
             RETURNING id, user_id, title, content, created_time, updated_time",
        )
        .bind(user_id)
        .bind(title)
        .bind(content)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::NoSuchUser(user_id)
            }
            _ => StoreError::Database(e),
        })?;
        post(&row)
    }

    pub async fn post_by_id(&self, id: i64) -> Result<Option<PostRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, title, content, created_time, updated_time FROM posts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(post).transpose()
    }

    /// A user's posts, newest first, at most `limit`.
    pub async fn posts_by_user(
        &self,
        user_id: i64,
        limit: u32,
    ) -> Result<Vec<PostRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, title, content, created_time, updated_time \
             FROM posts WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(post).collect()
    }
}

/// Connects once and reads the schema.
async fn probe(url: &str, backend: Backend) -> Result<(), StoreError> {
    use sqlx::Connection;
    let unusable = |e: sqlx::Error| StoreError::Unusable {
        url: redact(url.split('?').next().unwrap_or(url)),
        reason: match &e {
            sqlx::Error::Database(db) => db.message().to_string(),
            other => other.to_string(),
        },
    };
    let connect = sqlx::AnyConnection::connect(url);
    let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| StoreError::Unusable {
            url: redact(url),
            reason: "no connection within 10 s".into(),
        })?
        .map_err(unusable)?;
    let check = match backend {
        Backend::Sqlite => "PRAGMA schema_version",
        Backend::Postgres => "SELECT 1",
    };
    sqlx::query(check)
        .execute(&mut conn)
        .await
        .map_err(unusable)?;
    if matches!(backend, Backend::Sqlite) {
        enable_wal(&mut conn).await.map_err(unusable)?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// Puts an SQLite file in WAL mode, which lets several processes share it.
/// The mode is kept in the file, so this changes something once, on a new
/// file; that change needs an exclusive lock SQLite's busy timeout does not
/// wait for, so instances starting together on a new file would fail with
/// "database is locked". They retry here instead, bounded (~10 s).
async fn enable_wal(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    const ATTEMPTS: u32 = 60;
    let mut pause = Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && is_busy(&e) => {
                tracing::debug!("another instance holds the new database file ({e}); waiting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended codes included.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let primary = db
        .code()
        .and_then(|code| code.parse::<u32>().ok())
        .map(|code| code & 0xff);
    matches!(primary, Some(5 | 6)) || db.message().contains("database is locked")
}

/// Checks an SQLite URL, creates its directory (0700) and file (0600).
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(StoreError::BadUrl {
            url: url.to_string(),
            reason: "no file path (expected sqlite://PATH, e.g. sqlite://data/user.db)".into(),
        });
    }
    let parent = PathBuf::from(path).parent().map(Path::to_path_buf);
    let in_memory = path == ":memory:" || query.contains("mode=memory");
    if !in_memory {
        if let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(&dir).map_err(|e| StoreError::BadUrl {
                url: url.to_string(),
                reason: format!("directory {}: {e}", dir.display()),
            })?;
        }
        if !query.contains("mode=ro") {
            private_db_file(Path::new(path)).map_err(|reason| StoreError::BadUrl {
                url: url.to_string(),
                reason,
            })?;
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

fn user(row: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_time: row.try_get("created_time")?,
        updated_time: row.try_get("updated_time")?,
        token_version: row.try_get("token_version")?,
    })
}

fn post(row: &AnyRow) -> Result<PostRecord, StoreError> {
    Ok(PostRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        title: row.try_get("title")?,
        content: row.try_get("content")?,
        created_time: row.try_get("created_time")?,
        updated_time: row.try_get("updated_time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_redacted() {
        assert_eq!(backend_of("sqlite://x.db").expect("ok"), Backend::Sqlite);
        assert_eq!(
            backend_of("postgres://u@h/db").expect("ok"),
            Backend::Postgres
        );
        assert!(backend_of("mysql://h/db").is_err());
        assert_eq!(
            redact("postgres://bob:s3cret@db:5432/users"),
            "postgres://bob:***@db:5432/users"
        );
        assert_eq!(redact("postgres://bob@db/users"), "postgres://bob@db/users");
        assert!(sqlite_url("sqlite://").is_err());
    }
}
