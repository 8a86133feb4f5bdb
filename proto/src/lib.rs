//! Call events of Switchboard, generated from `schema/` by prost.
//!
//! The schema is the contract between the gateway (producer) and every
//! consumer of the call-event topic, including the Salesforce connector,
//! and between the connector (producer of `TaskSyncStatus`) and the gateway
//! reading the status topic.

/// `switchboard.events.v1`
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchboard.events.v1.rs"));
}

pub use prost::Message;
pub use v1::{call_event::Kind, CallEvent, TaskSyncState, TaskSyncStatus};

impl v1::CallEvent {
    /// A short name of the event kind, used in logs, metrics and the outbox.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Some(Kind::Started(_)) => "call.started",
            Some(Kind::Ringing(_)) => "call.ringing",
            Some(Kind::Answered(_)) => "call.answered",
            Some(Kind::Ended(_)) => "call.ended",
            Some(Kind::RecordingAvailable(_)) => "recording.available",
            Some(Kind::MediaState(_)) => "call.media_state",
            Some(Kind::RecordingState(_)) => "recording.state",
            Some(Kind::Quality(_)) => "call.quality",
            Some(Kind::VoicemailAvailable(_)) => "voicemail.available",
            Some(Kind::Rating(_)) => "call.rating",
            Some(Kind::Screening(_)) => "voicemail.screening",
            Some(Kind::Note(_)) => "call.note",
            Some(Kind::Related(_)) => "call.related",
            Some(Kind::Assigned(_)) => "call.assigned",
            Some(Kind::Transferred(_)) => "call.transferred",
            Some(Kind::Parked(_)) => "call.parked",
            None => "unknown",
        }
    }
}
