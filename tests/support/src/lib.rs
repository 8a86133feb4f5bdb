//! What several of Switchboard's test suites share, so that each starts
//! its helpers the same way instead of keeping a copy:
//!
//! - [`kafka`]: a Kafka-protocol broker for one test (the one
//!   `SWITCHBOARD_TEST_KAFKA` names, else a tansu broker started from
//!   `SWITCHBOARD_TEST_TANSU_BIN`), topics created on it, and records,
//!   watermarks and committed offsets read back;
//! - [`baresip`]: a baresip softphone driven over its `ctrl_tcp`
//!   interface, speaking a WAV file and writing what it hears and sends;
//! - [`ports`]: free TCP ports; free UDP ports for the programs a test
//!   starts, picked below the kernel's ephemeral range; and test gateways'
//!   media ranges, inside it.
//!
//! The programs come from the environment `scripts/test` prepares; a test
//! fails with a message saying how to get one that is missing. Setting
//! things up panics (a test cannot go on without its broker or phone);
//! look-ups that a test polls return errors, so that a wait can take a
//! failed look-up for "not yet".
//!
//! This crate depends on no Switchboard crate: the services' tests and the
//! end-to-end tests all use it as a dev-dependency.

pub mod baresip;
pub mod kafka;
pub mod ports;

use std::path::{Path, PathBuf};

/// The value of the environment variable `name`, unless unset or blank.
pub fn configured(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The program named by environment variable `var`, which must exist.
pub fn required_program(var: &str) -> PathBuf {
    let value = configured(var).unwrap_or_else(|| {
        panic!(
            "environment variable {var} is not set: this test runs a real program (SIPp, baresip, tansu, \
             SIPVicious svwar…); run it through `scripts/test`, or `eval \"$(scripts/test --print-env)\"` first, \
             which installs them and exports their SWITCHBOARD_TEST_… variables"
        )
    });
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} does not name a file; run `scripts/test --print-env` to install it", path.display());
    path
}

/// Reads a file for a failure message; says so when it is missing.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
