//! The relational store shared by Switchboard's roles.
//!
//! One code base serves SQLite (the embedded default of `switchboard up`) and
//! PostgreSQL (production) through sqlx's `Any` driver: queries are written in
//! the SQL both databases accept (`$1` placeholders, `RETURNING`, `ON CONFLICT`),
//! columns use portable types only (BIGINT, TEXT, BLOB/BYTEA) and the schema
//! lives twice, once per dialect, in `migrations/sqlite` and
//! `migrations/postgres`. See `docs/decisions/0003-one-store-two-databases.md`.

mod outbox;

pub use outbox::{Outbox, OutboxRow};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyConnectOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

pub use sqlx;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Errors of the store, each telling the operator what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url {url:?} is not supported: use sqlite://<file> or postgres://<user>@<host>/<db>")]
    UnsupportedUrl { url: String },
    #[error("cannot connect to the database at {url}: {source}; check that the server runs and the url is right")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying the schema failed: {0}; run `switchboard migrate` against an empty or Switchboard-owned database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database schema is not current (missing migration {version}); run `switchboard migrate`")]
    NotMigrated { version: i64 },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Which database sits behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool to the Switchboard database, of either dialect.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). SQLite files are
    /// created when missing and run in WAL mode so readers never block the
    /// writer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl { url: url.to_owned() });
        };
        let url_with_mode = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url_with_mode).map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
        })?;
        let max = match dialect {
            Dialect::Sqlite => 4,
            Dialect::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { url: redact(url), source })?;
        Ok(Self { pool, dialect })
    }

    /// Applies every migration of this dialect that is not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Fails unless every migration of this build is applied: roles refuse to
    /// start on an outdated schema instead of failing mid-call.
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = true")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        for m in self.migrator().iter() {
            if !applied.contains(&m.version) {
                return Err(StoreError::NotMigrated { version: m.version });
            }
        }
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The call-event outbox of this database.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.pool.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The url without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(redact("postgres://sb:secret@db/sb"), "postgres://sb:***@db/sb");
        assert_eq!(redact("postgres://sb@db/sb"), "postgres://sb@db/sb");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn rejects_unknown_scheme() {
        let err = Database::connect("mysql://x").await.unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
