//! The environment `scripts/test` prepares for the tests.
//!
//! The tests need programs that cargo does not build (tansu, s3s-fs, SIPp),
//! a PostgreSQL server and the `switchboard` binary. `scripts/test` installs
//! what is missing and exports where each one is; these functions read those
//! variables and fail with a message that says how to get them.

use std::path::PathBuf;

/// Base URL of a PostgreSQL server where the tests may create databases,
/// e.g. `postgres://postgres@127.0.0.1:5432/postgres` (the
/// database in the URL, if any, is only used to create and drop others).
pub const POSTGRES_URL: &str = "SWITCHBOARD_TEST_POSTGRES_URL";
// The tansu broker's (`SWITCHBOARD_TEST_TANSU_BIN`) is read by
// `switchboard_test_support::kafka`.
/// Path of the s3s-fs binary.
pub const S3S_BIN: &str = "SWITCHBOARD_TEST_S3S_BIN";
/// Path of the SIPp binary.
pub const SIPP_BIN: &str = "SWITCHBOARD_TEST_SIPP_BIN";
/// Path of the built `switchboard` binary.
pub const SWITCHBOARD_BIN: &str = "SWITCHBOARD_BIN";
/// coturn's `turnserver` (Debian's `coturn`).
pub const TURNSERVER_BIN: &str = "SWITCHBOARD_TEST_TURNSERVER_BIN";

/// The value of `name`, or an error saying how to run the tests.
pub fn required(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => anyhow::bail!(
            "environment variable {name} is not set: the end-to-end tests need real backends; \
             run them with `scripts/test` (it installs PostgreSQL, tansu, s3s-fs and SIPp, builds \
             the switchboard binary and exports SWITCHBOARD_TEST_POSTGRES_URL, SWITCHBOARD_TEST_TANSU_BIN, \
             SWITCHBOARD_TEST_S3S_BIN, SWITCHBOARD_TEST_SIPP_BIN and SWITCHBOARD_BIN)"
        ),
    }
}

/// The path in `name`, checked to exist.
pub fn required_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(required(name)?);
    if !path.is_file() {
        anyhow::bail!(
            "{name}={} does not name an existing file; rerun `scripts/test`, which installs or builds it",
            path.display()
        );
    }
    Ok(path)
}
