//! The connector's metrics, named and described where they are emitted.
//!
//! Recorded through the `metrics` facade; the binary installs the Prometheus
//! exporter. Label values are small closed sets (no call ids).

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Events read from the log, by `kind` (e.g. `call.ended`) and `outcome`
/// (`applied`, `duplicate`, `ignored`, `invalid`, `undecodable`).
pub const EVENTS_TOTAL: &str = "switchboard_connector_events_total";
/// HTTP requests to Salesforce, by `operation` (`token`, `upsert_tasks`: an
/// sObject Collections upsert of up to 200 Tasks, `upsert_case`, `describe`) and
/// `status` (HTTP status, `timeout` or `network`).
pub const SALESFORCE_REQUESTS_TOTAL: &str = "switchboard_connector_salesforce_requests_total";
/// API requests used in the org's 24-hour window, from `Sforce-Limit-Info`.
pub const SALESFORCE_API_USAGE: &str = "switchboard_connector_salesforce_api_usage";
/// The org's 24-hour API request limit, from `Sforce-Limit-Info`.
pub const SALESFORCE_API_LIMIT: &str = "switchboard_connector_salesforce_api_limit";
/// Records or events set aside for `switchboard replay`, by `reason`
/// (`undecodable`, `invalid_event`, `salesforce_rejected`).
pub const DEAD_LETTERS_TOTAL: &str = "switchboard_connector_dead_letters_total";
/// Task writes by `outcome` (`created`, `updated`, `rejected`).
pub const TASK_WRITES_TOTAL: &str = "switchboard_connector_task_writes_total";
/// Case creations (an agent asked for a new Case) by `outcome` (`created`,
/// `found`: an earlier attempt had created it, `rejected`).
pub const CASE_WRITES_TOTAL: &str = "switchboard_connector_case_writes_total";
/// Agents of a call that get no Task, by `reason`
/// (`agent_not_linked`, `invalid_salesforce_user_id`).
pub const TASKS_SKIPPED_TOTAL: &str = "switchboard_connector_tasks_skipped_total";
/// Failed Salesforce attempts that will be retried, by `class`
/// (`retryable`, `token`, `limit`).
pub const SALESFORCE_RETRIES_TOTAL: &str = "switchboard_connector_salesforce_retries_total";
/// Failures of the connector's own database or broker that stall progress
/// until they clear, by `component` (`store`, `kafka`).
pub const STALLS_TOTAL: &str = "switchboard_connector_stalls_total";
/// Calls whose first Task Salesforce accepted: with
/// `switchboard_connector_salesforce_requests_total{operation!="token"}`,
/// the API requests per logged call.
pub const CALLS_LOGGED_TOTAL: &str = "switchboard_connector_calls_logged_total";
/// Batches written (events folded, their Tasks upserted, positions
/// committed).
pub const BATCHES_TOTAL: &str = "switchboard_connector_batches_total";
/// Task writes per batch.
pub const BATCH_TASKS: &str = "switchboard_connector_batch_tasks";
/// Seconds from a batch's first event until its writes were accepted.
pub const BATCH_SECONDS: &str = "switchboard_connector_batch_seconds";
/// Seconds the connector waits between Salesforce requests because the
/// org's daily API usage is near its limit (0 when it is not).
pub const PACING_SECONDS: &str = "switchboard_connector_salesforce_pacing_seconds";
/// Task sync statuses published for the gateway, by `outcome` (`sent`,
/// `failed`: the status topic did not take it in time).
pub const STATUS_PUBLISHED_TOTAL: &str = "switchboard_connector_status_published_total";
/// Start-up preflights (describe of Task and Case), by `result`: `ready`,
/// `misconfigured` (the start fails) or `unchecked` (Salesforce could not
/// be asked; the connector starts anyway).
pub const PREFLIGHT_TOTAL: &str = "switchboard_connector_preflight_total";

/// Registers descriptions with the installed recorder; harmless to call
/// more than once.
pub fn describe() {
    describe_counter!(EVENTS_TOTAL, "Call events read by the connector, by kind and outcome");
    describe_counter!(SALESFORCE_REQUESTS_TOTAL, "HTTP requests to Salesforce, by operation and status");
    describe_gauge!(SALESFORCE_API_USAGE, "API requests used in the org's 24-hour window (Sforce-Limit-Info)");
    describe_gauge!(SALESFORCE_API_LIMIT, "API request limit of the org's 24-hour window (Sforce-Limit-Info)");
    describe_counter!(DEAD_LETTERS_TOTAL, "Events dead-lettered by the connector, by reason");
    describe_counter!(TASK_WRITES_TOTAL, "Salesforce Task upserts, by outcome");
    describe_counter!(CASE_WRITES_TOTAL, "Salesforce Case upserts for new Cases agents asked for, by outcome");
    describe_counter!(TASKS_SKIPPED_TOTAL, "Agents of a call that get no Task, by reason");
    describe_counter!(SALESFORCE_RETRIES_TOTAL, "Salesforce failures that are retried, by class");
    describe_counter!(PREFLIGHT_TOTAL, "Start-up checks of the org's fields and permissions, by result");
    describe_counter!(CALLS_LOGGED_TOTAL, "Calls whose first Task Salesforce accepted");
    describe_counter!(BATCHES_TOTAL, "Batches of events folded and written to Salesforce");
    describe_histogram!(BATCH_TASKS, "Task writes per batch");
    describe_histogram!(BATCH_SECONDS, "Seconds from a batch's first event until Salesforce accepted its writes");
    describe_gauge!(PACING_SECONDS, "Wait between Salesforce requests while the org's daily API usage is near its limit");
    describe_counter!(STATUS_PUBLISHED_TOTAL, "Task sync statuses published on the status topic, by outcome");
    describe_counter!(STALLS_TOTAL, "Database or broker failures that stall the connector until they clear");
}

pub(crate) fn event(kind: &'static str, outcome: &'static str) {
    counter!(EVENTS_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
}

pub(crate) fn salesforce_request(operation: &'static str, status: &str) {
    counter!(SALESFORCE_REQUESTS_TOTAL, "operation" => operation, "status" => status.to_owned()).increment(1);
}

pub(crate) fn api_usage(used: u64, limit: u64) {
    gauge!(SALESFORCE_API_USAGE).set(used as f64);
    gauge!(SALESFORCE_API_LIMIT).set(limit as f64);
}

pub(crate) fn dead_letter(reason: &'static str) {
    counter!(DEAD_LETTERS_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn task_write(outcome: &'static str) {
    counter!(TASK_WRITES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn case_write(outcome: &'static str) {
    counter!(CASE_WRITES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn task_skipped(reason: &'static str) {
    counter!(TASKS_SKIPPED_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn retry(class: &'static str) {
    counter!(SALESFORCE_RETRIES_TOTAL, "class" => class).increment(1);
}

pub(crate) fn stall(component: &'static str) {
    counter!(STALLS_TOTAL, "component" => component).increment(1);
}

pub(crate) fn preflight(result: &'static str) {
    counter!(PREFLIGHT_TOTAL, "result" => result).increment(1);
}

pub(crate) fn calls_logged(calls: u64) {
    counter!(CALLS_LOGGED_TOTAL).increment(calls);
}

pub(crate) fn batch(tasks: usize, elapsed: Duration) {
    counter!(BATCHES_TOTAL).increment(1);
    histogram!(BATCH_TASKS).record(tasks as f64);
    histogram!(BATCH_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn pacing_wait(wait: Duration) {
    gauge!(PACING_SECONDS).set(wait.as_secs_f64());
}

pub(crate) fn status_published(outcome: &'static str) {
    counter!(STATUS_PUBLISHED_TOTAL, "outcome" => outcome).increment(1);
}
