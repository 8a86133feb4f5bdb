//! Harness of Switchboard's end-to-end tests.
//!
//! Every test runs against real things: a PostgreSQL server (a fresh database
//! per test), the tansu Kafka broker, the s3s-fs S3 server (SigV4 checked),
//! SIPp as carrier and as agent phone, baresip as a far end, the
//! `switchboard` binary itself and the Salesforce emulator. Each backend has
//! its own module; each starts its server on free ports with its own data,
//! and stops it when the handle is dropped. The broker and baresip come from
//! the workspace's `switchboard-test-support` crate (re-exported here as
//! [`kafka`] and [`baresip`]), which the services' own tests use too.
//!
//! The paths of the external programs come from environment variables that
//! `scripts/test` exports (see [`env`]); a test that misses one fails and says
//! how to run it, it never skips.
//!
//! A test owns a [`TestContext`]: a scratch directory holding every data
//! directory and log file of the test. When the test fails, the context keeps
//! the directory and prints the tail of every log, so a failure can be read
//! without rerunning it.

pub mod browser;
pub mod context;
pub mod env;
pub mod events;
pub use switchboard_test_support::ports;
pub mod postgres;
pub mod process;
pub mod s3;
pub mod salesforce;
pub mod sipp;
pub mod switchboard;
pub mod turn;
pub mod wait;
pub mod wav;

pub use context::TestContext;
pub use switchboard_test_support::{baresip, kafka};
pub use wait::eventually;

/// A random alphanumeric string, for credentials and tokens a test hands to
/// the servers it starts.
pub fn random_secret(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString as _};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}
