//! A Salesforce org in a process: the OAuth 2.0 JWT bearer flow, the client
//! credentials flow, the web-server (authorization code) flow with PKCE,
//! refresh tokens and OpenID
//! Connect ID tokens, the UserInfo endpoint and identity URLs, and the REST
//! API resources Switchboard uses, with Salesforce's documented status codes,
//! both error body shapes, upsert semantics, the `Sforce-Limit-Info` header,
//! session expiry and field validation of Task, Case, Opportunity, Contact,
//! Lead, Account and User.
//!
//! Tests start one with [`Emulator::start`] on port 0, give the connector its
//! [`Emulator::url`] as login host, and assert on [`Emulator::tasks`]; faults
//! ([`Fault`]) make the org fail on demand. [`Emulator::watch_writes`]
//! reports each record write as it happens, with its time, for latency
//! measurements. For the web-server flow a test
//! registers its callback URL ([`Emulator::add_callback_url`]) and signs a
//! user in to the emulated browser ([`Emulator::sign_in_browser`]) or names
//! one with `login_hint`; the authorization endpoint then redirects with a
//! code at once. The `salesforce-emulator` binary serves the same org for
//! docker-compose and manual runs, steered over HTTP under `/__emulator/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use salesforce_emulator::{AssertionClaims, Emulator, EmulatorConfig, TestCredentials};
//! let credentials = TestCredentials::generate()?;
//! let config = EmulatorConfig::new(credentials.certificate_pem.clone());
//! let username = config.username.clone();
//! let emulator = Emulator::start(config, "127.0.0.1:0".parse()?).await?;
//! let claims = AssertionClaims::new(emulator.consumer_key(), username, emulator.url(), std::time::Duration::from_secs(120));
//! let assertion = credentials.sign_assertion(&claims)?;
//! // POST salesforce_emulator::token_request_form(&assertion) to emulator.token_url() …
//! # let _ = assertion; Ok(()) }
//! ```

#![warn(missing_docs)]

mod authorize;
mod client_credentials;
mod collections;
mod config;
mod control;
mod credentials;
mod emulator;
mod errors;
mod faults;
mod id_token;
mod identity;
mod ids;
mod oauth;
mod pkce;
mod query;
mod rest;
mod router;
mod schema;
mod search;
mod session;
mod state;
mod store;
mod validation;
mod web_server;

pub use client_credentials::CLIENT_CREDENTIALS_GRANT;
pub use collections::MAX_RECORDS;
pub use config::{
    ConnectedApp, CustomField, CustomFieldType, EmulatorConfig, RefreshTokenPolicy, UserSeed,
};
pub use control::{RecordWrite, Stats};
pub use credentials::{
    sign_assertion, token_request_form, AssertionClaims, CredentialsError, TestCredentials,
};
pub use emulator::{Emulator, EmulatorError};
pub use faults::Fault;
pub use oauth::JWT_BEARER_GRANT;
pub use state::Browser;
