//! The s3s-fs S3 server: one per test, with its own data directory.
//!
//! s3s-fs checks SigV4 signatures for real (a wrong secret is refused), so
//! the gateway's S3 client is tested as it would run against AWS or MinIO.
//! It serves a directory: each subdirectory is a bucket.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::ports::{free_tcp_port, LOCALHOST};
use crate::process::Process;
use crate::{env, eventually, TestContext};

/// The region every test client signs for.
pub const REGION: &str = "us-east-1";

/// A running S3 server with one bucket.
pub struct S3Server {
    process: Process,
    port: u16,
    data_dir: PathBuf,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl S3Server {
    /// Starts s3s-fs on a free port over a fresh data directory holding the
    /// (empty) bucket `bucket`, with random credentials.
    pub async fn start(ctx: &TestContext, bucket: &str) -> anyhow::Result<Self> {
        let bin = env::required_program(env::S3S_BIN)?;
        let data_dir = ctx.subdir("s3-data")?;
        std::fs::create_dir_all(data_dir.join(bucket)).context("creating the bucket directory")?;
        let port = free_tcp_port()?;
        let access_key_id = format!("AK{}", crate::random_secret(18)).to_uppercase();
        let secret_access_key = crate::random_secret(40);
        let mut command = Command::new(bin);
        command
            .arg("--host")
            .arg(LOCALHOST.to_string())
            .arg("--port")
            .arg(port.to_string())
            .arg("--access-key")
            .arg(&access_key_id)
            .arg("--secret-key")
            .arg(&secret_access_key)
            .arg(&data_dir);
        let mut process = Process::spawn(ctx, "s3s-fs", command)?;
        eventually("s3s-fs to accept connections", Duration::from_secs(30), || {
            let up = process.ensure_running().map(|_| std::net::TcpStream::connect((LOCALHOST, port)).is_ok());
            async move { up.map(|ok| ok.then_some(())) }
        })
        .await?;
        Ok(Self { process, port, data_dir, bucket: bucket.to_owned(), access_key_id, secret_access_key })
    }

    /// `http://127.0.0.1:<port>`, for `recordings.s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{LOCALHOST}:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The directory s3s-fs serves.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The server's process, to check it is still alive.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// A client of the bucket with the server's credentials.
    pub fn client(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        self.client_with_secret(&self.secret_access_key)
    }

    /// A client of the bucket that signs with `secret`: with a wrong one,
    /// every request must be refused.
    pub fn client_with_secret(&self, secret: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(REGION)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(secret)
            .build()
            .context("building the S3 client")?;
        Ok(Arc::new(store))
    }

    /// Keys of every object in the bucket, listed over S3.
    pub async fn list_keys(&self) -> anyhow::Result<Vec<String>> {
        let client = self.client()?;
        let mut keys: Vec<String> = client
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .context("listing the bucket")?;
        keys.sort();
        Ok(keys)
    }

    /// The bytes of object `key`, fetched over S3.
    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let client = self.client()?;
        let object = client.get(&ObjectPath::from(key)).await.with_context(|| format!("GET {key}"))?;
        Ok(object.bytes().await?.to_vec())
    }
}
