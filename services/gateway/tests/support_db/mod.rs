//! Test databases: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database on the server named by `SWITCHBOARD_TEST_POSTGRES_URL`
//! (created with a random name, dropped when the test ends, even on panic).

#![allow(dead_code)]

use switchboard_store::Database;

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "SWITCHBOARD_TEST_POSTGRES_URL";

/// A migrated database that lives as long as the test.
pub struct TestDb {
    db: Database,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres: Option<PostgresDrop>,
}

impl TestDb {
    /// A migrated SQLite database in a fresh temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("switchboard.db").display());
        let db = Database::connect(&url).await.expect("open SQLite");
        db.migrate().await.expect("migrate SQLite");
        Self { db, _sqlite_dir: Some(dir), postgres: None }
    }

    /// A migrated, freshly created PostgreSQL database, or `None` (with the
    /// reason printed) when no server is configured.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Ok(server) = std::env::var(POSTGRES_URL_VAR) else {
            println!("{test}: skipped on PostgreSQL because {POSTGRES_URL_VAR} is not set");
            return None;
        };
        let suffix: u64 = rand::random();
        let mut name: String = format!("sb_{test}").chars().take(40).collect();
        name.push_str(&format!("_{suffix:016x}"));
        let admin = Database::connect(&server).await.expect("connect to the PostgreSQL test server");
        switchboard_store::sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(admin.pool())
            .await
            .expect("create the test database");
        admin.close().await;
        let guard = PostgresDrop { server: server.clone(), name: name.clone() };
        let mut url = url::Url::parse(&server).expect("SWITCHBOARD_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        let db = Database::connect(url.as_str()).await.expect("connect to the test database");
        db.migrate().await.expect("migrate PostgreSQL");
        Some(Self { db, _sqlite_dir: None, postgres: Some(guard) })
    }

    /// The database under test.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Closes the pool so a PostgreSQL database can be dropped right away.
    pub async fn finish(self) {
        self.db.close().await;
    }
}

/// Drops the test database on the PostgreSQL server when the test is over.
struct PostgresDrop {
    server: String,
    name: String,
}

impl Drop for PostgresDrop {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // The test's runtime may be gone (or be the one panicking): drop the
        // database from a runtime of our own on a plain thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let admin = Database::connect(&server).await.map_err(std::io::Error::other)?;
                switchboard_store::sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(admin.pool())
                    .await
                    .map_err(std::io::Error::other)?;
                admin.close().await;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}
