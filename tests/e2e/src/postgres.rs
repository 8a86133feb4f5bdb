//! A fresh PostgreSQL database per test.
//!
//! The server is shared (one per machine, started by `scripts/test`); every
//! test creates its own database on it, so tests never see each other's
//! rows and may run in parallel. The database is dropped with the handle.

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;
use url::Url;

use crate::env;

/// A database created for one test.
pub struct PostgresDatabase {
    admin_url: Url,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates an empty database with a unique name on the server named by
    /// `SWITCHBOARD_TEST_POSTGRES_URL`.
    pub async fn create() -> anyhow::Result<Self> {
        let base = env::required(env::POSTGRES_URL)?;
        let mut admin_url = Url::parse(&base).with_context(|| format!("{} is not a URL: {base}", env::POSTGRES_URL))?;
        if admin_url.path().trim_matches('/').is_empty() {
            admin_url.set_path("/postgres");
        }
        let name = format!("switchboard_e2e_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(admin_url.as_str()).await.with_context(|| {
            format!("connecting to PostgreSQL at {base} (is the server running? `scripts/test` starts it)")
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name} (the role in {base} needs CREATEDB)"))?;
        admin.close().await.ok();
        let mut url = admin_url.clone();
        url.set_path(&format!("/{name}"));
        Ok(Self { admin_url, name, url: url.to_string() })
    }

    /// The connection URL of the database, as `switchboard` takes it in
    /// `database.url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context guarantees: use a private runtime
        // on its own thread to issue the DROP DATABASE.
        let admin_url = self.admin_url.to_string();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}
