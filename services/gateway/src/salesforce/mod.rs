//! Salesforce on the agent's behalf, with the agent's own tokens: caller
//! matching at ring time (F14, F15) and the Cases and Opportunities a call
//! can be assigned to (F10, F11); and the sync status of each agent's Task
//! of a call as the connector reports it (`sync`, from `sync_tasks` or the
//! status topic, `sync_topic`). Writing to Salesforce (Tasks, new Cases)
//! is the connector's job, from the call events; the gateway only reads.

pub mod client;
pub mod context;
pub mod matcher;
pub mod numbers;
pub mod sync;
pub mod sync_topic;

pub use client::{AgentGrant, SalesforceApi, SalesforceError};
pub use context::{
    CallerMatches, MatchStatus, RecordMatch, SalesforceContext, SalesforceObject, WorkItem,
    WorkSearch,
};
