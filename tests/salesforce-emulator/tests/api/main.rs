//! The emulator's HTTP API, exercised with a real HTTP client against a
//! started org.

mod binary;
mod client_credentials;
mod collections;
mod control;
mod harness;
mod identity;
mod limits_and_faults;
mod oauth;
mod openid;
mod query_and_search;
mod sobjects;
mod watch;
mod web_server;
