//! The fold: call events in, Salesforce Task writes out.
//!
//! A pure state machine, free of I/O and clocks, so every rule about what
//! lands in Salesforce is unit-tested without a network. [`CallState`]
//! accumulates the facts of one call from its events in any order, with
//! duplicates and replays ignored by event sequence; [`CallState::plan`]
//! derives, for every agent that owns a Task of the call, the Task fields and
//! whether they still have to be written. The caller performs the writes and
//! reports the answers back ([`CallState::record_accepted`],
//! [`CallState::record_rejected`]); the state is persisted between events so a
//! crash loses nothing and a replay writes nothing twice.
//!
//! Who gets a Task: the call's owner (the user the number routes to, or who
//! placed the call) and every agent that answered it. Agents that only rang
//! get none, so a hunt group does not flood every member with missed calls.
//!
//! Who and What (F10, F11, F14, F15, decision 0017): the record an agent
//! relates the call to (`call.related`: a Contact or Lead becomes the Task's
//! `WhoId`, an Account its `WhatId`) and the Case or Opportunity it assigns
//! the call to (`call.assigned`: the `WhatId`, winning over an Account) are
//! facts of the call, not of the agent who chose them: the caller is the
//! same person for every agent of the call, so they apply to every agent's
//! Task, and the last one (highest sequence) counts, whoever sent it. A new
//! Case the agent asked for is created first, once, by an upsert on its
//! assignment id ([`Plan::case`]), and the Tasks then link to it. Salesforce
//! refuses a `WhatId` next to a Lead `WhoId`: the Lead stays, the `WhatId`
//! is left out and [`TaskSync::note`] says why.
//!
//! Privacy mode (F2, decision 0017): an agent whose latest event naming it
//! (`started`, `ringing`, `answered`, `transferred`) says `privacy_mode`
//! gets a Task without the number: the Subject names the related record,
//! else only the direction, and the Description names no party and links
//! no recording or voicemail (it says it was logged in privacy mode; result,
//! quality, rating and notes stay). The other agents' Tasks of the call are
//! written as usual.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchboard_proto::v1::{self, call_event::Kind, CallEvent};

/// Salesforce's length limit of `Task.Subject`, `CallDisposition` and `CallObject`.
pub const SHORT_TEXT_MAX: usize = 255;
/// Salesforce's length limit of `Task.Description`.
pub const DESCRIPTION_MAX: usize = 32_000;

/// An event that cannot be folded, whatever the state: it is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// Without a call id the event belongs to no Task.
    #[error("event {event_id:?} has no call id")]
    MissingCallId {
        /// The event's id, to find it in the log.
        event_id: String,
    },
    /// Sequences start at 1; 0 means the producer did not set it, and
    /// duplicates could not be told apart.
    #[error("event {event_id:?} of call {call_id} has sequence 0 (sequences start at 1)")]
    ZeroSequence {
        /// The call the event names.
        call_id: String,
        /// The event's id, to find it in the log.
        event_id: String,
    },
    /// A state only ever receives the events of its own call.
    #[error("event of call {event_call_id} was offered to the state of call {state_call_id}")]
    WrongCall {
        /// The call the state belongs to.
        state_call_id: String,
        /// The call the event names.
        event_call_id: String,
    },
}

/// Checks what every event needs before any state is looked up.
pub fn validate(event: &CallEvent) -> Result<(), FoldError> {
    if event.call_id.trim().is_empty() {
        return Err(FoldError::MissingCallId { event_id: event.event_id.clone() });
    }
    if event.sequence == 0 {
        return Err(FoldError::ZeroSequence { call_id: event.call_id.clone(), event_id: event.event_id.clone() });
    }
    Ok(())
}

/// What applying one event did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new event; its facts are now part of the state.
    New,
    /// This sequence was applied before (redelivery or replay): no change.
    Duplicate,
    /// A kind this build does not know (a newer producer): remembered as
    /// applied so it is not counted again, otherwise no effect.
    Ignored,
}

impl Applied {
    /// Label for the `outcome` of `switchboard_connector_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::New => "applied",
            Applied::Duplicate => "duplicate",
            Applied::Ignored => "ignored",
        }
    }
}

/// Direction of the call as Salesforce's `CallType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    /// From a trunk to a user.
    Inbound,
    /// From a user to a trunk.
    Outbound,
    /// Between two users.
    Internal,
}

impl CallDirection {
    fn from_proto(value: i32) -> Option<Self> {
        match v1::Direction::try_from(value).ok()? {
            v1::Direction::Inbound => Some(Self::Inbound),
            v1::Direction::Outbound => Some(Self::Outbound),
            v1::Direction::Internal => Some(Self::Internal),
            v1::Direction::Unspecified => None,
        }
    }

    /// The `CallType` picklist value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "Inbound",
            Self::Outbound => "Outbound",
            Self::Internal => "Internal",
        }
    }
}

/// One end of the call as signalled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyFacts {
    /// E.164 when the gateway could normalise it, else as signalled.
    pub number: String,
    /// Display name from signalling, possibly empty.
    pub display_name: String,
}

impl PartyFacts {
    fn from_proto(party: Option<&v1::Party>) -> Self {
        party
            .map(|p| Self { number: p.number.trim().to_owned(), display_name: p.display_name.trim().to_owned() })
            .unwrap_or_default()
    }

    /// The number, else the name, for subjects.
    fn short(&self) -> &str {
        if !self.number.is_empty() {
            &self.number
        } else if !self.display_name.is_empty() {
            &self.display_name
        } else {
            "an unknown number"
        }
    }

    /// Number and name, for descriptions.
    fn long(&self) -> String {
        match (self.number.is_empty(), self.display_name.is_empty()) {
            (false, false) if self.display_name != self.number => format!("{} ({})", self.number, self.display_name),
            _ => self.short().to_owned(),
        }
    }
}

/// What the events said about one agent of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    /// The linked Salesforce user, from the latest event that carried one.
    pub salesforce_user_id: String,
    /// Sequence of the event `salesforce_user_id` came from.
    pub salesforce_user_id_seq: u64,
    /// Name shown in descriptions.
    pub display_name: String,
    /// Named as the call's owner by `started`.
    pub owner: bool,
    /// A `ringing` event named this agent.
    pub rang: bool,
    /// An `answered` event named this agent.
    pub answered: bool,
    /// Highest sequence of a `transferred` event that handed the call away
    /// from this agent (0: none).
    #[serde(default)]
    pub transferred_away_seq: u64,
    /// Highest sequence of a `transferred` event that handed the call to
    /// this agent (0: none). A transfer back after a transfer away leaves the
    /// agent with the call.
    #[serde(default)]
    pub transferred_in_seq: u64,
    /// The agent had privacy mode on (F2), as the latest event naming it
    /// said: its Task names no number and links no recording.
    #[serde(default)]
    pub privacy_mode: bool,
    /// Sequence of the event `privacy_mode` came from.
    #[serde(default)]
    pub privacy_mode_seq: u64,
    /// When the agent got the call: its earliest `answered`, or the
    /// transfer that handed the call to it (Unix ms).
    #[serde(default)]
    pub talking_since_ms: Option<i64>,
    /// When the agent handed the call over, latest transfer away (Unix ms).
    #[serde(default)]
    pub handed_over_at_ms: Option<i64>,
}

impl AgentFacts {
    /// The agent handed the call over and did not get it back.
    pub fn handed_over(&self) -> bool {
        self.transferred_away_seq > self.transferred_in_seq
    }
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndKind {
    /// The producer did not say (or a newer reason this build does not know).
    Unspecified,
    /// Answered, then hung up normally.
    Completed,
    /// The caller gave up before an answer.
    Cancelled,
    /// Nobody answered in time.
    NoAnswer,
    /// The callee was busy or declined.
    Busy,
    /// Set-up failed.
    Failed,
    /// Nobody answered; the gateway took a voicemail.
    Voicemail,
}

impl EndKind {
    fn from_proto(value: i32) -> Self {
        match v1::EndReason::try_from(value) {
            Ok(v1::EndReason::Completed) => Self::Completed,
            Ok(v1::EndReason::Cancelled) => Self::Cancelled,
            Ok(v1::EndReason::NoAnswer) => Self::NoAnswer,
            Ok(v1::EndReason::Voicemail) => Self::Voicemail,
            Ok(v1::EndReason::Busy) => Self::Busy,
            Ok(v1::EndReason::Failed) => Self::Failed,
            Ok(v1::EndReason::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

/// Facts of the `ended` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndFacts {
    /// Sequence of the `ended` event these facts came from.
    pub sequence: u64,
    /// How the call ended.
    pub reason: EndKind,
    /// `caller`, `callee` or `system`.
    pub hangup_by: String,
    /// Seconds from answer to hangup.
    pub talk_seconds: u32,
    /// Seconds from start to hangup.
    pub total_seconds: u32,
    /// When the call ended, Unix epoch milliseconds.
    pub ended_at_ms: i64,
}

/// A recording announced for the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFacts {
    /// Sequence of the announcing event, which orders recordings in the description.
    pub sequence: u64,
    /// The gateway link that appears in the Task.
    pub url: String,
    /// Length of the recording.
    pub duration_ms: u64,
    /// Admin-policy recordings (F7) stay out of the Task: the Task is visible
    /// to its owner, the recording only to admins.
    pub admin_only: bool,
}

/// A voicemail left on the call (`voicemail.available`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicemailFacts {
    /// Sequence of the announcing event, which orders voicemails in the description.
    pub sequence: u64,
    /// The gateway link that appears in the Task.
    pub url: String,
    /// Length of the message.
    pub duration_ms: u64,
    /// The user whose mailbox it is.
    pub user_id: String,
}

/// A note an agent wrote about the call (`call.note`, F12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteFacts {
    /// Sequence of the event, which orders notes in the description.
    pub sequence: u64,
    /// The agent who wrote it.
    pub user_id: String,
    /// The note as written.
    pub text: String,
}

/// The measured quality of the call (`call.quality`): MOS per leg, as text
/// with one decimal so the state stays comparable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityFacts {
    /// Sequence of the report: the highest one counts.
    pub sequence: u64,
    /// (`caller` or `callee`, MOS) for each leg that carried audio.
    pub legs: Vec<(String, String)>,
}

/// An agent's own rating of the call's audio (`call.rating`, F17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingFacts {
    /// Sequence of the event: the agent's last rating counts.
    pub sequence: u64,
    /// 1 (bad) to 5 (excellent).
    pub score: u32,
    /// The agent's comment, possibly empty.
    pub comment: String,
}

/// The record an agent said the caller is (`call.related`, F15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedFacts {
    /// Sequence of the event: the highest one counts.
    pub sequence: u64,
    /// The agent who chose it.
    pub user_id: String,
    /// `Contact`, `Lead` or `Account`, as the event named it.
    pub object_type: String,
    /// The record's id.
    pub record_id: String,
    /// The record's name when it was chosen, for notes.
    pub name: String,
}

/// The Case or Opportunity an agent assigned the call to, or a new Case it
/// asked for (`call.assigned`, F10, F11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentFacts {
    /// Sequence of the event: the highest one counts.
    pub sequence: u64,
    /// Names the assignment; a new Case is upserted by it.
    pub assignment_id: String,
    /// The agent who assigned the call.
    pub user_id: String,
    /// `Case` or `Opportunity`, as the event named it.
    pub object_type: String,
    /// The existing record; empty for a new Case.
    pub record_id: String,
    /// A new Case's subject.
    pub subject: String,
    /// A new Case's description.
    pub description: String,
    /// An existing record's name, for notes.
    pub name: String,
}

impl AssignmentFacts {
    /// Asks for a new Case rather than naming an existing record.
    pub fn is_new_case(&self) -> bool {
        self.record_id.is_empty() && self.object_type.trim().eq_ignore_ascii_case("Case")
    }
}

/// What became of a new Case an agent asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSync {
    /// The Case's record id once Salesforce holds it.
    pub salesforce_id: Option<String>,
    /// Salesforce's error code when it refused the Case for good.
    pub error_code: Option<String>,
    /// Salesforce's message when it refused the Case for good.
    pub message: Option<String>,
}

/// Sync status of the Task of one agent of the call, persisted per
/// (call, agent) so that a replay or a crash never writes twice or loses a
/// write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSync {
    /// Salesforce has accepted a write, so the Task exists: later writes
    /// must not set create-only fields such as `TaskSubtype`.
    pub created: bool,
    /// The Task's record id, when Salesforce returned one.
    pub salesforce_id: Option<String>,
    /// The fields Salesforce accepted last; a write is due when the derived
    /// fields differ.
    pub last_written: Option<TaskFields>,
    /// The fields Salesforce refused for good, and why; they were
    /// dead-lettered and are not retried until a later event changes them.
    pub rejected: Option<Rejection>,
    /// Why no Task is written for this agent, if so.
    pub skipped: Option<String>,
    /// How many writes Salesforce accepted.
    pub writes: u32,
    /// Why a link the agent chose is not on the Task (e.g. a Case next to a
    /// Lead, which Salesforce refuses), for the agent to be shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A permanent refusal by Salesforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The fields that were refused.
    pub fields: TaskFields,
    /// Salesforce's error code, e.g. `FIELD_CUSTOM_VALIDATION_EXCEPTION`.
    pub error_code: String,
    /// Salesforce's message.
    pub message: String,
}

/// Everything known about one call, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// The call this state belongs to.
    pub call_id: String,
    /// Sequences already applied: the duplicate filter.
    pub applied: BTreeSet<u64>,
    /// Sequence of the `started` event applied, if any.
    pub started_seq: Option<u64>,
    /// When the call started (the Task's `ActivityDate`).
    pub started_at_ms: Option<i64>,
    /// Earliest event time seen, the date of the call when `started` is missing.
    pub first_event_at_ms: Option<i64>,
    /// Direction, unknown before `started` or when unspecified.
    pub direction: Option<CallDirection>,
    /// The calling party.
    pub from: PartyFacts,
    /// The called party.
    pub to: PartyFacts,
    /// User id of the call's owner.
    pub owner: Option<String>,
    /// Someone answered the call.
    pub answered: bool,
    /// First answer, Unix epoch milliseconds.
    pub answered_at_ms: Option<i64>,
    /// How the call ended; no Task is written before.
    pub ended: Option<EndFacts>,
    /// Recordings by recording id.
    pub recordings: BTreeMap<String, RecordingFacts>,
    /// Agents by Switchboard user id.
    pub agents: BTreeMap<String, AgentFacts>,
    /// Voicemails by recording id.
    #[serde(default)]
    pub voicemails: BTreeMap<String, VoicemailFacts>,
    /// Notes by note id, so a replayed note is kept once (at its lowest sequence).
    #[serde(default)]
    pub notes: BTreeMap<String, NoteFacts>,
    /// The latest quality report.
    #[serde(default)]
    pub quality: Option<QualityFacts>,
    /// Each agent's latest rating, by user id.
    #[serde(default)]
    pub ratings: BTreeMap<String, RatingFacts>,
    /// The latest record an agent related the call to.
    #[serde(default)]
    pub related: Option<RelatedFacts>,
    /// The latest assignment to a Case or Opportunity.
    #[serde(default)]
    pub assignment: Option<AssignmentFacts>,
    /// New Cases by assignment id. A Case's id is kept even when a later
    /// assignment replaces its assignment, so it is never created twice.
    #[serde(default)]
    pub cases: BTreeMap<String, CaseSync>,
    /// Task sync status by user id. Persisted apart from the call facts (one
    /// row per Task), hence skipped here.
    #[serde(skip)]
    pub tasks: BTreeMap<String, TaskSync>,
}

/// Why an agent gets no Task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The agent without a Task.
    pub user_id: String,
    /// Short label for metrics: `agent_not_linked` or `invalid_salesforce_user_id`.
    pub label: &'static str,
    /// Sentence for logs and the stored state.
    pub reason: String,
}

/// A field the connector writes, and whether it also writes it to a record
/// that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenField {
    /// The field's API name.
    pub name: &'static str,
    /// Sent on update too (else only when the record is created).
    pub updated: bool,
}

const fn written(name: &'static str) -> WrittenField {
    WrittenField { name, updated: true }
}

/// Every Task field [`TaskWrite::body`] can hold: [`TaskFields`], the
/// create-only `TaskSubtype` and the links [`TaskWrite::clear`] sends as null.
/// The start-up preflight checks the integration user may write each of
/// them; a test keeps this list and the bodies in step.
pub const TASK_FIELDS: &[WrittenField] = &[
    written("Subject"),
    written("Type"),
    written("CallType"),
    written("CallDurationInSeconds"),
    written("CallDisposition"),
    written("CallObject"),
    written("Status"),
    written("ActivityDate"),
    written("OwnerId"),
    written("Description"),
    written("WhoId"),
    written("WhatId"),
    WrittenField { name: "TaskSubtype", updated: false },
];

/// Every Case field [`CaseWrite::body`] can hold. The upsert that creates a
/// Case updates it instead when a retry finds it, so each is updated too.
pub const CASE_FIELDS: &[WrittenField] =
    &[written("Subject"), written("Description"), written("Origin"), written("ContactId"), written("OwnerId")];

/// The upsert that creates a new Case an agent asked for, to be sent to
/// Salesforce before the Tasks that link to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseWrite {
    /// Value of the Case external id field: the assignment id.
    pub assignment_id: String,
    /// The Case's fields, named as Salesforce names them.
    pub fields: CaseFields,
}

/// The fields of a new Case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFields {
    /// The agent's subject (255 characters at most).
    #[serde(rename = "Subject")]
    pub subject: String,
    /// The agent's description (32,000 characters at most).
    #[serde(rename = "Description")]
    pub description: String,
    /// Always `Phone`.
    #[serde(rename = "Origin")]
    pub origin: String,
    /// The related Contact, when the caller was related to one.
    #[serde(rename = "ContactId", skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// The assigning agent's Salesforce user, when linked.
    #[serde(rename = "OwnerId", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

impl CaseWrite {
    /// The JSON body of the upsert.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(&self.fields).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// One upsert of one Task, to be sent to Salesforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskWrite {
    /// The agent whose Task this is.
    pub user_id: String,
    /// Value of the external id field: `<call_id>:<user_id>`.
    pub external_id: String,
    /// The fields to set.
    pub fields: TaskFields,
    /// The Task is not known to exist yet, so create-only fields
    /// (`TaskSubtype`) are sent.
    pub create: bool,
    /// Links the connector wrote before and no longer derives (`WhoId`,
    /// `WhatId`), sent as null so Salesforce drops them. Links it never
    /// wrote are left out, so one set by hand in Salesforce stays.
    pub clear: Vec<&'static str>,
}

impl TaskWrite {
    /// The JSON body of the upsert. `TaskSubtype` is included only when
    /// `include_subtype` is set, because Salesforce refuses it on update.
    pub fn body(&self, include_subtype: bool) -> serde_json::Value {
        let mut body = serde_json::to_value(&self.fields).unwrap_or_else(|_| serde_json::json!({}));
        if include_subtype {
            if let Some(map) = body.as_object_mut() {
                map.insert("TaskSubtype".to_owned(), serde_json::Value::from("Call"));
            }
        }
        if let Some(map) = body.as_object_mut() {
            for field in &self.clear {
                map.insert((*field).to_owned(), serde_json::Value::Null);
            }
        }
        body
    }
}

/// What the fold wants done after an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// A new Case to create first. When set, nothing else is planned: the
    /// caller reports the answer ([`CallState::record_case_created`] or
    /// [`CallState::record_case_rejected`]) and plans again, so the Tasks
    /// are written once, already linked to the Case.
    pub case: Option<CaseWrite>,
    /// Upserts due now, one per Task whose fields changed.
    pub writes: Vec<TaskWrite>,
    /// Agents newly found to get no Task (each reported once).
    pub skipped: Vec<Skip>,
}

/// The Task fields the connector owns, named as Salesforce names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFields {
    /// "Inbound call from Grace Hopper (+1…)": the related record's name
    /// when there is one, else the number (255 characters at most). In
    /// privacy mode never the number: "Inbound call from Grace Hopper" or
    /// "Inbound call".
    #[serde(rename = "Subject")]
    pub subject: String,
    /// Always `Call`.
    #[serde(rename = "Type")]
    pub task_type: String,
    /// `Inbound`, `Outbound` or `Internal`; omitted when unknown.
    #[serde(rename = "CallType", skip_serializing_if = "Option::is_none", default)]
    pub call_type: Option<String>,
    /// Talk time of this agent.
    #[serde(rename = "CallDurationInSeconds")]
    pub call_duration_in_seconds: u32,
    /// `answered`, `answered elsewhere`, `transferred` (this agent handed the
    /// call over), `missed`, `voicemail`, `no answer`, `cancelled`, `busy` or `failed`.
    #[serde(rename = "CallDisposition")]
    pub call_disposition: String,
    /// The Switchboard call id.
    #[serde(rename = "CallObject")]
    pub call_object: String,
    /// Always `Completed`: an open Task would lock its related records.
    #[serde(rename = "Status")]
    pub status: String,
    /// Day the call started, UTC, `YYYY-MM-DD`.
    #[serde(rename = "ActivityDate")]
    pub activity_date: String,
    /// The agent's Salesforce user id.
    #[serde(rename = "OwnerId")]
    pub owner_id: String,
    /// Parties, result, talk time, recording and voicemail links, measured
    /// MOS, the agent's rating and the notes (32,000 characters at most,
    /// else cut and ended with [`CUT_MARKER`]). In privacy mode without the
    /// parties and the links.
    #[serde(rename = "Description")]
    pub description: String,
    /// The related Contact or Lead; omitted when none.
    #[serde(rename = "WhoId", skip_serializing_if = "Option::is_none", default)]
    pub who_id: Option<String>,
    /// The assigned Case or Opportunity, else the related Account; omitted
    /// when none (always next to a Lead).
    #[serde(rename = "WhatId", skip_serializing_if = "Option::is_none", default)]
    pub what_id: Option<String>,
}

impl CallState {
    /// The empty state of a call nothing is known about yet.
    pub fn new(call_id: impl Into<String>) -> Self {
        Self { call_id: call_id.into(), ..Default::default() }
    }

    /// Folds one event into the state. Events may come in any order and more
    /// than once; for facts that an event can restate, the one with the
    /// highest sequence wins, so the result does not depend on the order.
    pub fn apply(&mut self, event: &CallEvent) -> Result<Applied, FoldError> {
        validate(event)?;
        if event.call_id != self.call_id {
            return Err(FoldError::WrongCall { state_call_id: self.call_id.clone(), event_call_id: event.call_id.clone() });
        }
        if !self.applied.insert(event.sequence) {
            return Ok(Applied::Duplicate);
        }
        let seq = event.sequence;
        let at = event.occurred_at_ms;
        let Some(kind) = &event.kind else {
            return Ok(Applied::Ignored);
        };
        self.first_event_at_ms = Some(self.first_event_at_ms.map_or(at, |t| t.min(at)));
        match kind {
            Kind::Started(started) => {
                if self.started_seq.is_none_or(|s| seq > s) {
                    self.started_seq = Some(seq);
                    self.started_at_ms = Some(at);
                    self.direction = CallDirection::from_proto(started.direction);
                    self.from = PartyFacts::from_proto(started.from.as_ref());
                    self.to = PartyFacts::from_proto(started.to.as_ref());
                    let owner = started.owner.as_ref().filter(|a| !a.user_id.trim().is_empty());
                    for facts in self.agents.values_mut() {
                        facts.owner = false;
                    }
                    self.owner = owner.map(|a| a.user_id.trim().to_owned());
                    if let Some(agent) = owner {
                        self.note_agent(agent, seq).owner = true;
                    }
                }
            }
            Kind::Ringing(ringing) => {
                if let Some(agent) = ringing.agent.as_ref().filter(|a| !a.user_id.trim().is_empty()) {
                    self.note_agent(agent, seq).rang = true;
                }
            }
            Kind::Answered(answered) => {
                self.answered = true;
                self.answered_at_ms = Some(self.answered_at_ms.map_or(at, |t| t.min(at)));
                if let Some(agent) = answered.agent.as_ref().filter(|a| !a.user_id.trim().is_empty()) {
                    let facts = self.note_agent(agent, seq);
                    facts.answered = true;
                    facts.talking_since_ms = Some(facts.talking_since_ms.map_or(at, |t| t.min(at)));
                }
            }
            Kind::Ended(ended) => {
                if self.ended.as_ref().is_none_or(|e| seq > e.sequence) {
                    self.ended = Some(EndFacts {
                        sequence: seq,
                        reason: EndKind::from_proto(ended.reason),
                        hangup_by: ended.hangup_by.trim().to_owned(),
                        talk_seconds: ended.talk_seconds,
                        total_seconds: ended.total_seconds,
                        ended_at_ms: at,
                    });
                }
            }
            Kind::Transferred(transferred) => {
                // The agent the call was handed to answered it too: it gets
                // a Task of its own (the one who handed it over keeps its,
                // marked `transferred`). A move to another device of the
                // same agent names it on both sides and changes nothing.
                if let Some(agent) = transferred.from.as_ref().filter(|a| !a.user_id.trim().is_empty()) {
                    let facts = self.note_agent(agent, seq);
                    facts.transferred_away_seq = facts.transferred_away_seq.max(seq);
                    facts.handed_over_at_ms = Some(facts.handed_over_at_ms.map_or(at, |t| t.max(at)));
                }
                if let Some(agent) = transferred.to.as_ref().filter(|a| !a.user_id.trim().is_empty()) {
                    let facts = self.note_agent(agent, seq);
                    facts.answered = true;
                    facts.transferred_in_seq = facts.transferred_in_seq.max(seq);
                    facts.talking_since_ms = Some(facts.talking_since_ms.map_or(at, |t| t.min(at)));
                }
            }
            Kind::Note(note) => {
                let id = if note.note_id.trim().is_empty() { format!("seq-{seq}") } else { note.note_id.trim().to_owned() };
                let facts = NoteFacts { sequence: seq, user_id: note.user_id.trim().to_owned(), text: note.text.clone() };
                // A note replayed under a later sequence keeps its first place.
                match self.notes.get(&id) {
                    Some(known) if known.sequence < seq => {}
                    _ => {
                        self.notes.insert(id, facts);
                    }
                }
            }
            Kind::Quality(report) => {
                if self.quality.as_ref().is_none_or(|q| seq > q.sequence) {
                    let legs = report
                        .legs
                        .iter()
                        .filter(|l| l.mos.is_finite() && l.mos > 0.0)
                        .map(|l| {
                            let leg = match v1::Leg::try_from(l.leg) {
                                Ok(v1::Leg::Caller) => "caller",
                                Ok(v1::Leg::Callee) => "callee",
                                _ => "other leg",
                            };
                            (leg.to_owned(), format!("{:.1}", l.mos))
                        })
                        .collect();
                    self.quality = Some(QualityFacts { sequence: seq, legs });
                }
            }
            Kind::Rating(rating) => {
                let user = rating.user_id.trim().to_owned();
                if self.ratings.get(&user).is_none_or(|r| seq > r.sequence) {
                    self.ratings.insert(
                        user,
                        RatingFacts { sequence: seq, score: rating.score, comment: rating.comment.trim().to_owned() },
                    );
                }
            }
            Kind::VoicemailAvailable(voicemail) => {
                let id = if voicemail.recording_id.is_empty() {
                    format!("seq-{seq}")
                } else {
                    voicemail.recording_id.clone()
                };
                let facts = VoicemailFacts {
                    sequence: seq,
                    url: voicemail.url.trim().to_owned(),
                    duration_ms: voicemail.duration_ms,
                    user_id: voicemail.user_id.trim().to_owned(),
                };
                match self.voicemails.get(&id) {
                    Some(known) if known.sequence > seq => {}
                    _ => {
                        self.voicemails.insert(id, facts);
                    }
                }
            }
            // Mid-call state does not change the call's log.
            Kind::MediaState(_) | Kind::RecordingState(_) | Kind::Screening(_) | Kind::Parked(_) => {
                return Ok(Applied::Ignored)
            }
            Kind::Related(related) => {
                if self.related.as_ref().is_none_or(|r| seq > r.sequence) {
                    self.related = Some(RelatedFacts {
                        sequence: seq,
                        user_id: related.user_id.trim().to_owned(),
                        object_type: related.object_type.trim().to_owned(),
                        record_id: related.record_id.trim().to_owned(),
                        name: related.name.trim().to_owned(),
                    });
                }
            }
            Kind::Assigned(assigned) => {
                if self.assignment.as_ref().is_none_or(|a| seq > a.sequence) {
                    self.assignment = Some(AssignmentFacts {
                        sequence: seq,
                        assignment_id: assigned.assignment_id.trim().to_owned(),
                        user_id: assigned.user_id.trim().to_owned(),
                        object_type: assigned.object_type.trim().to_owned(),
                        record_id: assigned.record_id.trim().to_owned(),
                        subject: assigned.subject.clone(),
                        description: assigned.description.clone(),
                        name: assigned.name.trim().to_owned(),
                    });
                }
            }
            Kind::RecordingAvailable(recording) => {
                let id = if recording.recording_id.is_empty() {
                    format!("seq-{seq}")
                } else {
                    recording.recording_id.clone()
                };
                let facts = RecordingFacts {
                    sequence: seq,
                    url: recording.url.trim().to_owned(),
                    duration_ms: recording.duration_ms,
                    admin_only: recording.admin_only,
                };
                match self.recordings.get(&id) {
                    Some(known) if known.sequence > seq => {}
                    _ => {
                        self.recordings.insert(id, facts);
                    }
                }
            }
        }
        Ok(Applied::New)
    }

    fn note_agent(&mut self, agent: &v1::Agent, seq: u64) -> &mut AgentFacts {
        let facts = self.agents.entry(agent.user_id.trim().to_owned()).or_default();
        let sf = agent.salesforce_user_id.trim();
        if !sf.is_empty() && seq >= facts.salesforce_user_id_seq {
            facts.salesforce_user_id = sf.to_owned();
            facts.salesforce_user_id_seq = seq;
        }
        if !agent.display_name.trim().is_empty() {
            facts.display_name = agent.display_name.trim().to_owned();
        }
        if seq >= facts.privacy_mode_seq {
            facts.privacy_mode = agent.privacy_mode;
            facts.privacy_mode_seq = seq;
        }
        facts
    }

    /// The user ids that own a Task of this call: the owner and every agent
    /// that answered.
    pub fn task_agents(&self) -> Vec<String> {
        self.agents.iter().filter(|(_, f)| f.owner || f.answered).map(|(id, _)| id.clone()).collect()
    }

    /// Decides the writes due now. Nothing is due before the call ended;
    /// afterwards a Task is (re)written whenever its derived fields differ
    /// from those Salesforce last accepted (or refused). Agents without a
    /// usable Salesforce user are marked skipped, each reported once.
    pub fn plan(&mut self) -> Plan {
        let mut plan = Plan::default();
        if self.ended.is_none() {
            return plan;
        }
        if let Some(case) = self.case_due() {
            plan.case = Some(case);
            return plan;
        }
        let links = self.links();
        for user_id in self.task_agents() {
            let derived = self.task_fields(&user_id, &links);
            let sync = self.tasks.entry(user_id.clone()).or_default();
            let fields = match derived {
                Ok(fields) => fields,
                Err((label, reason)) => {
                    if sync.skipped.as_deref() != Some(reason.as_str()) {
                        sync.skipped = Some(reason.clone());
                        plan.skipped.push(Skip { user_id, label, reason });
                    }
                    continue;
                }
            };
            sync.skipped = None;
            sync.note = links.note.clone();
            if sync.last_written.as_ref() == Some(&fields) || sync.rejected.as_ref().is_some_and(|r| r.fields == fields) {
                continue;
            }
            let mut clear = Vec::new();
            if let Some(last) = &sync.last_written {
                if last.who_id.is_some() && fields.who_id.is_none() {
                    clear.push("WhoId");
                }
                if last.what_id.is_some() && fields.what_id.is_none() {
                    clear.push("WhatId");
                }
            }
            plan.writes.push(TaskWrite {
                external_id: external_id(&self.call_id, &user_id),
                user_id,
                fields,
                create: !sync.created,
                clear,
            });
        }
        plan
    }

    /// Salesforce accepted `write`: the Task exists and holds its fields.
    pub fn record_accepted(&mut self, write: &TaskWrite, salesforce_id: Option<String>) {
        let sync = self.tasks.entry(write.user_id.clone()).or_default();
        sync.created = true;
        if salesforce_id.is_some() {
            sync.salesforce_id = salesforce_id;
        }
        sync.last_written = Some(write.fields.clone());
        sync.rejected = None;
        sync.writes += 1;
    }

    /// Salesforce holds the new Case of `assignment_id` as `salesforce_id`.
    pub fn record_case_created(&mut self, assignment_id: &str, salesforce_id: String) {
        let case = self.cases.entry(assignment_id.to_owned()).or_default();
        case.salesforce_id = Some(salesforce_id);
        case.error_code = None;
        case.message = None;
    }

    /// Salesforce refused the new Case of `assignment_id` for good; it has
    /// been dead-lettered, and the Tasks are written without it.
    pub fn record_case_rejected(&mut self, assignment_id: &str, error_code: &str, message: &str) {
        let case = self.cases.entry(assignment_id.to_owned()).or_default();
        case.error_code = Some(error_code.to_owned());
        case.message = Some(message.to_owned());
    }

    /// The new Case to write before the call's Tasks: the call ended and
    /// its latest assignment asks for a Case Salesforce neither holds nor
    /// refused. [`CallState::plan`] plans no Task while one is due.
    pub fn case_to_create(&self) -> Option<CaseWrite> {
        self.ended.as_ref()?;
        self.case_due()
    }

    /// The new Case to create now: the latest assignment asks for one that
    /// Salesforce neither holds nor refused.
    fn case_due(&self) -> Option<CaseWrite> {
        let assignment = self.assignment.as_ref().filter(|a| a.is_new_case() && !a.assignment_id.is_empty())?;
        if self.cases.get(&assignment.assignment_id).is_some_and(|c| c.salesforce_id.is_some() || c.error_code.is_some()) {
            return None;
        }
        let contact_id = self
            .related
            .as_ref()
            .filter(|r| r.object_type.eq_ignore_ascii_case("Contact") && is_salesforce_id(&r.record_id))
            .map(|r| r.record_id.clone());
        let owner_id = self
            .agents
            .get(&assignment.user_id)
            .map(|a| a.salesforce_user_id.clone())
            .filter(|id| is_salesforce_id(id));
        Some(CaseWrite {
            assignment_id: assignment.assignment_id.clone(),
            fields: CaseFields {
                subject: truncate_utf16(assignment.subject.trim(), SHORT_TEXT_MAX),
                description: truncate_utf16(&assignment.description, DESCRIPTION_MAX),
                origin: "Phone".to_owned(),
                contact_id,
                owner_id,
            },
        })
    }

    /// The related record's name, if the agent related the call to a named one.
    fn related_name(&self) -> Option<&str> {
        self.related.as_ref().map(|r| r.name.as_str()).filter(|n| !n.is_empty())
    }

    /// The Subject of a Task logged in privacy mode: the related record's
    /// name, else the direction alone; never a number.
    fn private_subject(&self) -> String {
        match (self.direction, self.related_name()) {
            (Some(CallDirection::Inbound), Some(name)) => format!("Inbound call from {name}"),
            (Some(CallDirection::Outbound), Some(name)) => format!("Outbound call to {name}"),
            (Some(direction), _) => format!("{} call", direction.as_str()),
            (None, _) => "Call".to_owned(),
        }
    }

    /// The other party for a subject: the related record's name next to the
    /// number when the agent related the call to one, else the number.
    fn other_party(&self, party: &PartyFacts) -> String {
        match self.related_name() {
            Some(name) if !party.number.is_empty() && party.number != name => format!("{name} ({})", party.number),
            Some(name) => name.to_owned(),
            None => party.short().to_owned(),
        }
    }

    /// `WhoId` and `WhatId` of every Task of the call, and why a chosen
    /// record is not among them.
    fn links(&self) -> Links {
        let mut links = Links::default();
        let mut notes = Vec::new();
        let mut account = None;
        if let Some(related) = &self.related {
            let label = record_label(&related.object_type, &related.name, &related.record_id);
            let object = related.object_type.to_ascii_lowercase();
            if !is_salesforce_id(&related.record_id) {
                notes.push(format!("{label} is not linked: {:?} is not a Salesforce record id", related.record_id));
            } else {
                match object.as_str() {
                    "contact" => links.who_id = Some(related.record_id.clone()),
                    "lead" => {
                        links.who_id = Some(related.record_id.clone());
                        links.who_is_lead = true;
                    }
                    "account" => account = Some(related.record_id.clone()),
                    _ => notes.push(format!("{label} is not linked: only a Contact, Lead or Account can be related")),
                }
            }
        }
        let mut assigned = None;
        if let Some(assignment) = &self.assignment {
            let label = if assignment.is_new_case() {
                format!("the new Case {:?}", assignment.subject.trim())
            } else {
                record_label(&assignment.object_type, &assignment.name, &assignment.record_id)
            };
            let object = assignment.object_type.to_ascii_lowercase();
            if assignment.is_new_case() {
                let case = self.cases.get(&assignment.assignment_id);
                match case {
                    _ if assignment.assignment_id.is_empty() => {
                        notes.push(format!("{label} was not created: the assignment has no id"))
                    }
                    Some(CaseSync { salesforce_id: Some(id), .. }) => assigned = Some((label, id.clone())),
                    Some(CaseSync { error_code: Some(code), message, .. }) => notes.push(format!(
                        "{label} was not created: Salesforce refused it ({code}: {})",
                        message.as_deref().unwrap_or_default()
                    )),
                    _ => {}
                }
            } else if !matches!(object.as_str(), "case" | "opportunity") {
                notes.push(format!("{label} is not linked: only a Case or Opportunity can be assigned"));
            } else if !is_salesforce_id(&assignment.record_id) {
                notes.push(format!("{label} is not linked: {:?} is not a Salesforce record id", assignment.record_id));
            } else {
                assigned = Some((label, assignment.record_id.clone()));
            }
        }
        let what = match (assigned, account) {
            (Some((label, id)), _) => Some((label, id)),
            (None, Some(id)) => {
                let related = self.related.as_ref().map(|r| record_label(&r.object_type, &r.name, &r.record_id));
                Some((related.unwrap_or_default(), id))
            }
            (None, None) => None,
        };
        if let Some((label, id)) = what {
            if links.who_is_lead {
                let lead = self.related.as_ref().map(|r| record_label(&r.object_type, &r.name, &r.record_id)).unwrap_or_default();
                notes.push(format!(
                    "{label} is not linked: the Task is related to {lead}, and Salesforce allows no Related To record next to a Lead"
                ));
            } else {
                links.what_id = Some(id);
            }
        }
        if !notes.is_empty() {
            links.note = Some(notes.join("; "));
        }
        links
    }

    /// Salesforce refused `write` for good; it has been dead-lettered.
    pub fn record_rejected(&mut self, write: &TaskWrite, error_code: &str, message: &str) {
        let sync = self.tasks.entry(write.user_id.clone()).or_default();
        sync.rejected = Some(Rejection {
            fields: write.fields.clone(),
            error_code: error_code.to_owned(),
            message: message.to_owned(),
        });
    }

    /// The talk time of one agent who answered. Without a transfer it is
    /// the call's (the gateway measures it). Once the call changed hands,
    /// each agent's share runs from when it got the call (answer, or the
    /// transfer to it) to when it handed it over or the call ended, within
    /// the call's talk time.
    fn talk_seconds(&self, agent: &AgentFacts, is_owner: bool) -> u32 {
        let Some(ended) = self.ended.as_ref() else { return 0 };
        let total = ended.talk_seconds;
        if !self.agents.values().any(|a| a.transferred_in_seq > 0 || a.transferred_away_seq > 0) {
            return total;
        }
        let start = agent.talking_since_ms.or(if is_owner { self.answered_at_ms } else { None });
        let end = if agent.handed_over() { agent.handed_over_at_ms } else { Some(ended.ended_at_ms) };
        match (start, end) {
            (Some(start), Some(end)) if end >= start => {
                let seconds = (end - start + 500) / 1000;
                u32::try_from(seconds).unwrap_or(u32::MAX).min(total)
            }
            _ => total,
        }
    }

    /// The Task of `user_id`, or why there is none.
    fn task_fields(&self, user_id: &str, links: &Links) -> Result<TaskFields, (&'static str, String)> {
        let agent = self.agents.get(user_id).cloned().unwrap_or_default();
        let owner_id = agent.salesforce_user_id.as_str();
        if owner_id.is_empty() {
            return Err(("agent_not_linked", format!("agent {user_id} is not linked to a Salesforce user")));
        }
        if !is_salesforce_id(owner_id) {
            return Err((
                "invalid_salesforce_user_id",
                format!("agent {user_id} has Salesforce user id {owner_id:?}, which is not a 15- or 18-character record id"),
            ));
        }
        let ended = self.ended.as_ref();
        let is_owner = self.owner.as_deref() == Some(user_id);
        let anyone_answered_by_name = self.agents.values().any(|a| a.answered);
        let call_answered = self.answered
            || ended.is_some_and(|e| e.reason == EndKind::Completed || e.talk_seconds > 0);
        let agent_answered = agent.answered
            || (call_answered && is_owner && !anyone_answered_by_name)
            || (call_answered && is_owner && self.direction == Some(CallDirection::Outbound));
        let reason = ended.map_or(EndKind::Unspecified, |e| e.reason);
        let placed_by_agent = is_owner && self.direction == Some(CallDirection::Outbound);
        let voicemail = reason == EndKind::Voicemail
            || self.voicemails.values().any(|v| v.user_id.is_empty() || v.user_id == user_id);
        let disposition = if agent.handed_over() {
            "transferred"
        } else if agent_answered {
            "answered"
        } else if call_answered {
            "answered elsewhere"
        } else {
            match reason {
                _ if voicemail => "voicemail",
                EndKind::Busy => "busy",
                EndKind::Failed => "failed",
                EndKind::Cancelled if placed_by_agent => "cancelled",
                _ if placed_by_agent => "no answer",
                _ => "missed",
            }
        };
        let talk = if agent_answered { self.talk_seconds(&agent, is_owner) } else { 0 };

        let private = agent.privacy_mode;
        let subject = match self.direction {
            _ if private => self.private_subject(),
            Some(CallDirection::Inbound) => format!("Inbound call from {}", self.other_party(&self.from)),
            Some(CallDirection::Outbound) => format!("Outbound call to {}", self.other_party(&self.to)),
            Some(CallDirection::Internal) => {
                format!("Internal call from {} to {}", self.from.short(), self.to.short())
            }
            None => format!("Call from {} to {}", self.from.short(), self.to.short()),
        };

        let mut description = String::new();
        let direction_word = self.direction.map_or("Call", |d| d.as_str());
        if private {
            description.push_str(&format!("{direction_word} call\nLogged in privacy mode: no number, no recording or voicemail link\n"));
        } else {
            description.push_str(&format!("{direction_word} call from {} to {}\n", self.from.long(), self.to.long()));
        }
        let mut result = format!("Result: {disposition}");
        if talk > 0 {
            result.push_str(&format!("; talk time {}", duration_text(u64::from(talk) * 1000)));
        }
        if let Some(by) = ended.map(|e| e.hangup_by.as_str()).filter(|s| !s.is_empty()) {
            result.push_str(&format!("; hung up by {by}"));
        }
        description.push_str(&result);
        description.push('\n');
        let mut recordings: Vec<&RecordingFacts> =
            self.recordings.values().filter(|r| !private && !r.admin_only && !r.url.is_empty()).collect();
        recordings.sort_by_key(|r| r.sequence);
        for recording in recordings {
            if recording.duration_ms > 0 {
                description.push_str(&format!("Recording ({}): {}\n", duration_text(recording.duration_ms), recording.url));
            } else {
                description.push_str(&format!("Recording: {}\n", recording.url));
            }
        }
        let mut voicemails: Vec<&VoicemailFacts> = self.voicemails.values().filter(|v| !private && !v.url.is_empty()).collect();
        voicemails.sort_by_key(|v| v.sequence);
        for voicemail in voicemails {
            if voicemail.duration_ms > 0 {
                description.push_str(&format!("Voicemail ({}): {}\n", duration_text(voicemail.duration_ms), voicemail.url));
            } else {
                description.push_str(&format!("Voicemail: {}\n", voicemail.url));
            }
        }
        if let Some(quality) = self.quality.as_ref().filter(|q| !q.legs.is_empty()) {
            let legs: Vec<String> = quality.legs.iter().map(|(leg, mos)| format!("{leg} {mos}")).collect();
            description.push_str(&format!("Measured quality (MOS): {}\n", legs.join(", ")));
        }
        if let Some(rating) = self.ratings.get(user_id).filter(|r| (1..=5).contains(&r.score)) {
            description.push_str(&format!("Agent's rating of the audio: {}/5", rating.score));
            if !rating.comment.is_empty() {
                description.push_str(&format!(" ({})", rating.comment));
            }
            description.push('\n');
        }
        description.push_str(&format!("Switchboard call id: {}", self.call_id));
        // Notes last: a cut for length takes them, not the links above.
        let mut notes: Vec<&NoteFacts> = self.notes.values().filter(|n| !n.text.trim().is_empty()).collect();
        notes.sort_by_key(|n| n.sequence);
        if !notes.is_empty() {
            description.push_str("\n\nNotes:");
        }
        for note in notes {
            let author = self.agents.get(&note.user_id).map_or("", |a| a.display_name.as_str());
            let author = if author.is_empty() { note.user_id.as_str() } else { author };
            if author.is_empty() {
                description.push_str(&format!("\n{}", note.text.trim()));
            } else {
                description.push_str(&format!("\n{author}: {}", note.text.trim()));
            }
        }

        let day_ms = self.started_at_ms.or(self.first_event_at_ms).unwrap_or(0);
        let activity_date = chrono::DateTime::from_timestamp_millis(day_ms)
            .unwrap_or_default()
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();

        Ok(TaskFields {
            subject: truncate_utf16(&subject, SHORT_TEXT_MAX),
            task_type: "Call".to_owned(),
            call_type: self.direction.map(|d| d.as_str().to_owned()),
            call_duration_in_seconds: talk,
            call_disposition: disposition.to_owned(),
            call_object: truncate_utf16(&self.call_id, SHORT_TEXT_MAX),
            status: "Completed".to_owned(),
            activity_date,
            owner_id: owner_id.to_owned(),
            description: cut_description(&description),
            who_id: links.who_id.clone(),
            what_id: links.what_id.clone(),
        })
    }
}

/// The links every Task of the call gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Links {
    who_id: Option<String>,
    who_is_lead: bool,
    what_id: Option<String>,
    /// Why a chosen record is not linked.
    note: Option<String>,
}

/// "the Lead Jane Doe (00Q…)", for notes.
fn record_label(object_type: &str, name: &str, record_id: &str) -> String {
    let object = if object_type.is_empty() { "record" } else { object_type };
    match (name.is_empty(), record_id.is_empty()) {
        (false, false) => format!("the {object} {name} ({record_id})"),
        (false, true) => format!("the {object} {name}"),
        _ => format!("the {object} {record_id}"),
    }
}

/// The external id value of the Task of `user_id` in call `call_id`.
pub fn external_id(call_id: &str, user_id: &str) -> String {
    format!("{call_id}:{user_id}")
}

/// `s` cut to at most `max` UTF-16 code units (how Salesforce counts field
/// lengths), never inside a character.
pub fn truncate_utf16(s: &str, max: usize) -> String {
    let mut units = 0;
    for (index, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return s[..index].to_owned();
        }
    }
    s.to_owned()
}

/// Ends a Description that was cut for length.
pub const CUT_MARKER: &str = "\n… [cut: the full notes are in Switchboard]";

/// `description` within [`DESCRIPTION_MAX`]; when too long, cut on a
/// character boundary and ended with [`CUT_MARKER`].
fn cut_description(description: &str) -> String {
    if description.encode_utf16().count() <= DESCRIPTION_MAX {
        return description.to_owned();
    }
    let mut cut = truncate_utf16(description, DESCRIPTION_MAX - CUT_MARKER.encode_utf16().count());
    cut.push_str(CUT_MARKER);
    cut
}

fn is_salesforce_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn duration_text(ms: u64) -> String {
    let secs = ms / 1000;
    match (secs / 3600, (secs / 60) % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{Agent, CallAnswered, CallEnded, CallRinging, CallStarted, Party, RecordingAvailable};

    const CALL: &str = "0193f0a2-0000-7000-8000-000000000001";
    const SF_USER: &str = "005000000000001AAA";
    /// 2024-03-01T10:00:00Z
    const T0: i64 = 1_709_287_200_000;

    #[test]
    fn bodies_hold_only_the_listed_fields_and_every_listed_field_occurs() {
        let fields = TaskFields {
            subject: "s".into(),
            task_type: "Call".into(),
            call_type: Some("Inbound".into()),
            call_duration_in_seconds: 1,
            call_disposition: "answered".into(),
            call_object: CALL.into(),
            status: "Completed".into(),
            activity_date: "2024-03-01".into(),
            owner_id: SF_USER.into(),
            description: "d".into(),
            who_id: Some("003000000000001AAA".into()),
            what_id: Some("500000000000001AAA".into()),
        };
        let write = TaskWrite { user_id: "u1".into(), external_id: "k".into(), fields, create: true, clear: vec!["WhoId", "WhatId"] };
        let mut seen = BTreeSet::new();
        for (body, create) in [(write.body(true), true), (write.body(false), false)] {
            for key in body.as_object().unwrap().keys() {
                let listed = TASK_FIELDS.iter().find(|f| f.name == key);
                assert!(listed.is_some(), "Task body field {key} is not in TASK_FIELDS");
                assert!(create || listed.is_some_and(|f| f.updated), "{key} is sent on update but listed create-only");
                seen.insert(key.clone());
            }
        }
        for field in TASK_FIELDS {
            assert!(seen.contains(field.name), "TASK_FIELDS lists {} that no body sends", field.name);
        }

        let case = CaseWrite {
            assignment_id: "a".into(),
            fields: CaseFields {
                subject: "s".into(),
                description: "d".into(),
                origin: "Phone".into(),
                contact_id: Some("003000000000001AAA".into()),
                owner_id: Some(SF_USER.into()),
            },
        };
        let keys: BTreeSet<String> = case.body().as_object().unwrap().keys().cloned().collect();
        let listed: BTreeSet<String> = CASE_FIELDS.iter().map(|f| f.name.to_owned()).collect();
        assert_eq!(keys, listed);
    }

    fn agent(user: &str, sf: &str) -> Option<Agent> {
        Some(Agent {
            user_id: user.into(),
            salesforce_user_id: sf.into(),
            device_id: "d1".into(),
            display_name: "Ann Agent".into(),
            privacy_mode: false,
        })
    }

    fn event(seq: u64, kind: Kind) -> CallEvent {
        CallEvent {
            event_id: format!("evt-{seq}"),
            call_id: CALL.into(),
            sequence: seq,
            occurred_at_ms: T0 + seq as i64 * 1000,
            kind: Some(kind),
        }
    }

    fn started(direction: v1::Direction, owner: Option<Agent>) -> CallEvent {
        event(
            1,
            Kind::Started(CallStarted {
                direction: direction as i32,
                from: Some(Party { number: "+14155550100".into(), display_name: "Carla Caller".into() }),
                to: Some(Party { number: "+14155550199".into(), display_name: String::new() }),
                owner,
            }),
        )
    }

    fn answered_call() -> Vec<CallEvent> {
        vec![
            started(v1::Direction::Inbound, agent("u1", SF_USER)),
            event(2, Kind::Ringing(CallRinging { agent: agent("u1", SF_USER) })),
            event(3, Kind::Answered(CallAnswered { agent: agent("u1", SF_USER) })),
            event(
                4,
                Kind::Ended(CallEnded {
                    reason: v1::EndReason::Completed as i32,
                    hangup_by: "caller".into(),
                    talk_seconds: 125,
                    total_seconds: 131,
                    sip_status: 200,
                    q850_cause: 16,
                }),
            ),
        ]
    }

    fn recording(seq: u64, id: &str, admin_only: bool) -> CallEvent {
        event(
            seq,
            Kind::RecordingAvailable(RecordingAvailable {
                recording_id: id.into(),
                object_key: format!("recordings/{id}.wav"),
                url: format!("https://gw.example.com/recordings/{id}"),
                format: "wav/pcm_s16le".into(),
                duration_ms: 124_000,
                size_bytes: 1,
                sample_rate_hz: 8000,
                channels: vec![],
                admin_only,
            }),
        )
    }

    /// Applies all events, then plans once.
    fn fold(events: &[CallEvent]) -> (CallState, Plan) {
        let mut state = CallState::new(CALL);
        for e in events {
            state.apply(e).unwrap();
        }
        let plan = state.plan();
        (state, plan)
    }

    /// Applies events one by one like the pipeline does, accepting every
    /// write; returns all writes made.
    fn run(state: &mut CallState, events: &[CallEvent]) -> Vec<TaskWrite> {
        let mut writes = Vec::new();
        for e in events {
            state.apply(e).unwrap();
            for w in state.plan().writes {
                state.record_accepted(&w, Some("00T000000000001AAA".into()));
                writes.push(w);
            }
        }
        writes
    }

    #[test]
    fn nothing_is_written_before_the_end() {
        let events = answered_call();
        let (_, plan) = fold(&events[..3]);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn an_answered_inbound_call_becomes_one_task() {
        let (_, plan) = fold(&answered_call());
        assert_eq!(plan.writes.len(), 1);
        let write = &plan.writes[0];
        assert_eq!(write.external_id, format!("{CALL}:u1"));
        assert!(write.create);
        let f = &write.fields;
        assert_eq!(f.subject, "Inbound call from +14155550100");
        assert_eq!(f.task_type, "Call");
        assert_eq!(f.call_type.as_deref(), Some("Inbound"));
        assert_eq!(f.call_duration_in_seconds, 125);
        assert_eq!(f.call_disposition, "answered");
        assert_eq!(f.call_object, CALL);
        assert_eq!(f.status, "Completed");
        assert_eq!(f.activity_date, "2024-03-01");
        assert_eq!(f.owner_id, SF_USER);
        assert!(f.description.contains("+14155550100 (Carla Caller)"), "{}", f.description);
        assert!(f.description.contains("talk time 2m 05s"), "{}", f.description);
        assert!(f.description.contains("hung up by caller"), "{}", f.description);
    }

    #[test]
    fn task_subtype_is_sent_on_create_only() {
        let mut state = CallState::new(CALL);
        let mut events = answered_call();
        events.push(recording(5, "r1", false));
        let writes = run(&mut state, &events);
        assert_eq!(writes.len(), 2, "one write at the end, one for the recording");
        assert!(writes[0].create);
        assert_eq!(writes[0].body(writes[0].create)["TaskSubtype"], "Call");
        assert!(!writes[1].create);
        assert!(writes[1].body(writes[1].create).get("TaskSubtype").is_none());
        assert_eq!(writes[1].body(false)["Type"], "Call");
        assert!(writes[1].fields.description.contains("https://gw.example.com/recordings/r1"));
        assert_eq!(state.tasks["u1"].writes, 2);
    }

    #[test]
    fn duplicates_and_replays_write_once() {
        let mut state = CallState::new(CALL);
        let events = answered_call();
        let mut doubled = Vec::new();
        for e in &events {
            doubled.push(e.clone());
            doubled.push(e.clone());
        }
        let writes = run(&mut state, &doubled);
        assert_eq!(writes.len(), 1);
        // A full replay (cursor reset) of the same log.
        for e in &events {
            assert_eq!(state.apply(e).unwrap(), Applied::Duplicate);
        }
        assert_eq!(run(&mut state, &events), vec![]);
        // The state survives persistence (the call part as JSON, the task
        // rows apart) and still dedupes.
        let tasks = state.tasks.clone();
        let mut restored: CallState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        restored.tasks = serde_json::from_str(&serde_json::to_string(&tasks).unwrap()).unwrap();
        assert_eq!(restored, state);
        assert_eq!(run(&mut restored, &events), vec![]);
    }

    #[test]
    fn any_order_gives_the_same_task() {
        let mut events = answered_call();
        events.push(recording(5, "r1", false));
        let (_, expected) = fold(&events);
        // Every rotation and the reversed order.
        for shift in 0..events.len() {
            let mut permuted = events.clone();
            permuted.rotate_left(shift);
            let (_, plan) = fold(&permuted);
            assert_eq!(plan, expected, "rotation {shift}");
        }
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(fold(&reversed).1, expected);
    }

    #[test]
    fn a_late_event_that_changes_nothing_writes_nothing() {
        // `ended` before `answered` and `ringing`.
        let events = answered_call();
        let mut state = CallState::new(CALL);
        let writes = run(&mut state, &[events[0].clone(), events[3].clone(), events[2].clone()]);
        // The end says COMPLETED, so the owner is known to have answered.
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].fields.call_disposition, "answered");
        assert_eq!(run(&mut state, &[events[1].clone()]), vec![]);
    }

    #[test]
    fn a_missed_call_has_no_talk_time() {
        let events = vec![
            started(v1::Direction::Inbound, agent("u1", SF_USER)),
            event(2, Kind::Ringing(CallRinging { agent: agent("u1", SF_USER) })),
            event(3, Kind::Ended(CallEnded { reason: v1::EndReason::NoAnswer as i32, total_seconds: 30, ..Default::default() })),
        ];
        let (_, plan) = fold(&events);
        assert_eq!(plan.writes[0].fields.call_disposition, "missed");
        assert_eq!(plan.writes[0].fields.call_duration_in_seconds, 0);
    }

    #[test]
    fn outbound_and_transferred_calls() {
        let events = vec![
            started(v1::Direction::Outbound, agent("u1", SF_USER)),
            event(2, Kind::Answered(CallAnswered { agent: None })),
            event(3, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 9, ..Default::default() })),
        ];
        let (_, plan) = fold(&events);
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].fields.subject, "Outbound call to +14155550199");
        assert_eq!(plan.writes[0].fields.call_type.as_deref(), Some("Outbound"));
        assert_eq!(plan.writes[0].fields.call_disposition, "answered");
        assert_eq!(plan.writes[0].fields.call_duration_in_seconds, 9);

        // Inbound to u1, answered by u2: both get a Task.
        let events = vec![
            started(v1::Direction::Inbound, agent("u1", SF_USER)),
            event(2, Kind::Answered(CallAnswered { agent: agent("u2", "005000000000002AAA") })),
            event(3, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 40, ..Default::default() })),
        ];
        let (_, plan) = fold(&events);
        let by_user: BTreeMap<_, _> = plan.writes.iter().map(|w| (w.user_id.as_str(), &w.fields)).collect();
        assert_eq!(by_user.len(), 2);
        assert_eq!(by_user["u1"].call_disposition, "answered elsewhere");
        assert_eq!(by_user["u1"].call_duration_in_seconds, 0);
        assert_eq!(by_user["u2"].call_disposition, "answered");
        assert_eq!(by_user["u2"].owner_id, "005000000000002AAA");
    }

    #[test]
    fn the_agent_a_call_is_transferred_to_gets_a_task_of_its_own() {
        let events = vec![
            started(v1::Direction::Inbound, agent("u1", SF_USER)),
            event(2, Kind::Answered(CallAnswered { agent: agent("u1", SF_USER) })),
            event(
                3,
                Kind::Transferred(v1::CallTransferred {
                    from: agent("u1", SF_USER),
                    to: agent("u2", "005000000000002AAA"),
                    kind: v1::TransferKind::Blind as i32,
                    to_number: String::new(),
                }),
            ),
            event(4, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 40, ..Default::default() })),
        ];
        let (_, plan) = fold(&events);
        let by_user: BTreeMap<_, _> = plan.writes.iter().map(|w| (w.user_id.as_str(), &w.fields)).collect();
        assert_eq!(by_user.len(), 2, "{by_user:?}");
        assert_eq!(by_user["u2"].call_disposition, "answered");
        assert_eq!(by_user["u2"].owner_id, "005000000000002AAA");
    }

    #[test]
    fn each_agent_of_a_transferred_call_gets_its_own_talk_time() {
        let at = |seq: u64, ms: i64, kind: Kind| CallEvent { occurred_at_ms: T0 + ms, ..event(seq, kind) };
        let events = vec![
            at(1, 0, started(v1::Direction::Inbound, agent("u1", SF_USER)).kind.unwrap()),
            at(2, 5_000, Kind::Answered(CallAnswered { agent: agent("u1", SF_USER) })),
            at(
                3,
                35_000,
                Kind::Transferred(v1::CallTransferred {
                    from: agent("u1", SF_USER),
                    to: agent("u2", "005000000000002AAA"),
                    kind: v1::TransferKind::Blind as i32,
                    to_number: String::new(),
                }),
            ),
            at(4, 125_000, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 120, ..Default::default() })),
        ];
        let (_, plan) = fold(&events);
        let by_user: BTreeMap<_, _> = plan.writes.iter().map(|w| (w.user_id.as_str(), &w.fields)).collect();
        assert_eq!(by_user["u1"].call_duration_in_seconds, 30, "answer to transfer");
        assert_eq!(by_user["u2"].call_duration_in_seconds, 90, "transfer to hang-up");
        assert_eq!(by_user["u1"].call_disposition, "transferred");

        // Any order of arrival gives the same shares.
        let mut reversed = events.clone();
        reversed.reverse();
        let (_, plan) = fold(&reversed);
        let again: BTreeMap<_, _> = plan.writes.iter().map(|w| (w.user_id.as_str(), w.fields.call_duration_in_seconds)).collect();
        assert_eq!((again["u1"], again["u2"]), (30, 90));
    }

    #[test]
    fn an_unlinked_agent_is_skipped_once_with_its_reason() {
        let mut events = answered_call();
        events[0] = started(v1::Direction::Inbound, agent("u1", ""));
        events[1] = event(2, Kind::Ringing(CallRinging { agent: agent("u1", "") }));
        events[2] = event(3, Kind::Answered(CallAnswered { agent: agent("u1", "") }));
        let mut state = CallState::new(CALL);
        state.apply(&events[0]).unwrap();
        state.apply(&events[1]).unwrap();
        state.apply(&events[2]).unwrap();
        state.apply(&events[3]).unwrap();
        let plan = state.plan();
        assert!(plan.writes.is_empty());
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].label, "agent_not_linked");
        assert!(state.tasks["u1"].skipped.as_deref().unwrap().contains("not linked"));
        assert_eq!(state.plan(), Plan::default(), "reported once");

        let mut state = CallState::new(CALL);
        state.apply(&started(v1::Direction::Inbound, agent("u1", "not-an-id"))).unwrap();
        state.apply(&events[3]).unwrap();
        assert_eq!(state.plan().skipped[0].label, "invalid_salesforce_user_id");
    }

    #[test]
    fn a_rejected_write_is_not_retried_until_the_task_changes() {
        let mut state = CallState::new(CALL);
        let events = answered_call();
        for e in &events {
            state.apply(e).unwrap();
        }
        let write = state.plan().writes.remove(0);
        state.record_rejected(&write, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no");
        assert!(state.plan().writes.is_empty());
        state.apply(&recording(5, "r1", false)).unwrap();
        let plan = state.plan();
        assert_eq!(plan.writes.len(), 1);
        assert!(plan.writes[0].create, "the Task was never created");
    }

    #[test]
    fn admin_only_recordings_stay_out_of_the_task() {
        let mut state = CallState::new(CALL);
        let mut events = answered_call();
        events.push(recording(5, "r-admin", true));
        let writes = run(&mut state, &events);
        assert_eq!(writes.len(), 1, "the admin recording changes nothing");
        assert!(!writes[0].fields.description.contains("r-admin"));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf16("abc", 2), "ab");
        assert_eq!(truncate_utf16("abc", 3), "abc");
        // 'é' is one UTF-16 unit but two bytes; '😀' is two units.
        assert_eq!(truncate_utf16("éé", 1), "é");
        assert_eq!(truncate_utf16("a😀", 2), "a");
        assert_eq!(truncate_utf16("a😀", 3), "a😀");

        let mut events = answered_call();
        let long_name = "é".repeat(300);
        events[0] = event(
            1,
            Kind::Started(CallStarted {
                direction: v1::Direction::Inbound as i32,
                from: Some(Party { number: long_name.clone(), display_name: String::new() }),
                to: None,
                owner: agent("u1", SF_USER),
            }),
        );
        for i in 0..400 {
            events.push(recording(10 + i, &format!("rec-{i}-{}", "😀".repeat(40)), false));
        }
        let (_, plan) = fold(&events);
        let f = &plan.writes[0].fields;
        assert_eq!(f.subject.encode_utf16().count(), SHORT_TEXT_MAX);
        assert!(f.subject.starts_with("Inbound call from éé"));
        assert!(f.description.encode_utf16().count() <= DESCRIPTION_MAX);
        assert!(f.description.encode_utf16().count() > DESCRIPTION_MAX - 2);
        assert!(f.description.ends_with(CUT_MARKER), "a cut is marked");
    }

    #[test]
    fn invalid_events_are_refused() {
        let mut e = answered_call().remove(0);
        e.sequence = 0;
        assert!(matches!(validate(&e), Err(FoldError::ZeroSequence { .. })));
        e.sequence = 1;
        e.call_id = " ".into();
        assert!(matches!(validate(&e), Err(FoldError::MissingCallId { .. })));
        e.call_id = "other".into();
        let mut state = CallState::new(CALL);
        assert!(matches!(state.apply(&e), Err(FoldError::WrongCall { .. })));
        assert!(state.applied.is_empty());
    }

    const CONTACT: &str = "003000000000001AAA";
    const LEAD: &str = "00Q000000000001AAA";
    const ACCOUNT: &str = "001000000000001AAA";
    const CASE: &str = "500000000000001AAA";
    const OPPORTUNITY: &str = "006000000000001AAA";
    const NEW_CASE: &str = "500000000000009AAA";

    fn related(seq: u64, object_type: &str, record_id: &str) -> CallEvent {
        event(
            seq,
            Kind::Related(v1::CallRelated {
                user_id: "u1".into(),
                record_id: record_id.into(),
                object_type: object_type.into(),
                name: format!("{object_type} name"),
            }),
        )
    }

    fn assigned(seq: u64, object_type: &str, record_id: &str) -> CallEvent {
        event(
            seq,
            Kind::Assigned(v1::CallAssigned {
                assignment_id: format!("asg-{seq}"),
                user_id: "u1".into(),
                object_type: object_type.into(),
                record_id: record_id.into(),
                subject: if record_id.is_empty() { "Broken handset".into() } else { String::new() },
                description: if record_id.is_empty() { "Hums on every call".into() } else { String::new() },
                name: if record_id.is_empty() { String::new() } else { "00001001".into() },
            }),
        )
    }

    /// Plans like the pipeline: creates the due Case as `NEW_CASE`, then
    /// accepts every Task write. Returns the Case writes and Task writes.
    fn run_with_cases(state: &mut CallState, events: &[CallEvent]) -> (Vec<CaseWrite>, Vec<TaskWrite>) {
        let mut cases = Vec::new();
        let mut writes = Vec::new();
        for e in events {
            state.apply(e).unwrap();
            let mut plan = state.plan();
            while let Some(case) = plan.case.take() {
                assert!(plan.writes.is_empty(), "Tasks wait for the Case");
                state.record_case_created(&case.assignment_id, NEW_CASE.into());
                cases.push(case);
                plan = state.plan();
            }
            for w in plan.writes {
                state.record_accepted(&w, Some("00T000000000001AAA".into()));
                writes.push(w);
            }
        }
        (cases, writes)
    }

    #[test]
    fn related_contact_and_assigned_case_link_the_task_in_any_order() {
        // The assignment before `started`, the related record after `ended`.
        let calls = answered_call();
        let events = vec![
            assigned(6, "Case", CASE),
            calls[0].clone(),
            calls[1].clone(),
            calls[2].clone(),
            calls[3].clone(),
            related(5, "Contact", CONTACT),
        ];
        let mut state = CallState::new(CALL);
        let (_, writes) = run_with_cases(&mut state, &events);
        assert_eq!(writes.len(), 2, "one write at the end, one when the Contact came");
        assert_eq!(writes[0].fields.who_id, None);
        assert_eq!(writes[0].fields.what_id.as_deref(), Some(CASE));
        let last = &writes[1].fields;
        assert_eq!(last.who_id.as_deref(), Some(CONTACT));
        assert_eq!(last.what_id.as_deref(), Some(CASE));
        assert_eq!(writes[1].body(false)["WhoId"], CONTACT);
        assert_eq!(writes[1].body(false)["WhatId"], CASE);
        assert_eq!(state.tasks["u1"].note, None);

        // The same Task from every rotation of the events.
        let (_, expected) = fold(&events);
        for shift in 0..events.len() {
            let mut permuted = events.clone();
            permuted.rotate_left(shift);
            assert_eq!(fold(&permuted).1, expected, "rotation {shift}");
        }
    }

    #[test]
    fn without_links_the_body_names_no_who_or_what() {
        let (_, plan) = fold(&answered_call());
        let body = plan.writes[0].body(true);
        assert!(body.get("WhoId").is_none(), "{body}");
        assert!(body.get("WhatId").is_none(), "{body}");
    }

    #[test]
    fn the_last_related_record_and_assignment_count() {
        let mut events = answered_call();
        events.extend([
            related(7, "Contact", CONTACT),
            related(5, "Account", ACCOUNT),
            assigned(8, "Opportunity", OPPORTUNITY),
            assigned(6, "Case", CASE),
        ]);
        let (_, plan) = fold(&events);
        assert_eq!(plan.writes[0].fields.who_id.as_deref(), Some(CONTACT));
        assert_eq!(plan.writes[0].fields.what_id.as_deref(), Some(OPPORTUNITY));

        // An Account is the What only while nothing is assigned.
        let mut events = answered_call();
        events.push(related(5, "Account", ACCOUNT));
        let mut state = CallState::new(CALL);
        let (_, writes) = run_with_cases(&mut state, &events);
        assert_eq!(writes.last().unwrap().fields.who_id, None);
        assert_eq!(writes.last().unwrap().fields.what_id.as_deref(), Some(ACCOUNT));
        let (_, writes) = run_with_cases(&mut state, &[assigned(6, "Case", CASE)]);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].fields.what_id.as_deref(), Some(CASE));
    }

    #[test]
    fn related_and_assigned_events_are_deduplicated() {
        let mut events = answered_call();
        events.extend([related(5, "Contact", CONTACT), assigned(6, "Case", "")]);
        let mut state = CallState::new(CALL);
        let (cases, writes) = run_with_cases(&mut state, &events);
        assert_eq!(cases.len(), 1);
        assert_eq!(writes.len(), 3, "end, Contact, new Case");
        for e in &events {
            assert_eq!(state.apply(e).unwrap(), Applied::Duplicate);
        }
        assert_eq!(state.plan(), Plan::default());
        // The state survives persistence: the Case is not asked for again.
        let tasks = state.tasks.clone();
        let mut restored: CallState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        restored.tasks = tasks;
        assert_eq!(restored, state);
        assert_eq!(run_with_cases(&mut restored, &events), (vec![], vec![]));
    }

    #[test]
    fn a_new_case_is_asked_for_once_and_the_tasks_wait_for_it() {
        let mut events = answered_call();
        events.insert(0, related(5, "Contact", CONTACT));
        events.insert(0, assigned(6, "Case", ""));
        let mut state = CallState::new(CALL);
        for e in &events {
            state.apply(e).unwrap();
        }
        let plan = state.plan();
        let case = plan.case.clone().expect("a Case is due");
        assert!(plan.writes.is_empty());
        assert_eq!(case.assignment_id, "asg-6");
        assert_eq!(case.fields.subject, "Broken handset");
        assert_eq!(case.fields.description, "Hums on every call");
        assert_eq!(case.fields.origin, "Phone");
        assert_eq!(case.fields.contact_id.as_deref(), Some(CONTACT));
        assert_eq!(case.fields.owner_id.as_deref(), Some(SF_USER));
        assert_eq!(case.body()["Origin"], "Phone");
        // Not answered yet (a crash): asked for again, the same upsert.
        assert_eq!(state.plan().case, Some(case.clone()));

        state.record_case_created("asg-6", NEW_CASE.into());
        let plan = state.plan();
        assert_eq!(plan.case, None);
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(plan.writes[0].fields.what_id.as_deref(), Some(NEW_CASE));
        assert_eq!(plan.writes[0].fields.who_id.as_deref(), Some(CONTACT));

        // A later assignment elsewhere, then back: the Case is not made twice.
        state.record_accepted(&plan.writes[0], None);
        state.apply(&assigned(9, "Opportunity", OPPORTUNITY)).unwrap();
        assert_eq!(state.plan().writes[0].fields.what_id.as_deref(), Some(OPPORTUNITY));
        assert_eq!(state.cases["asg-6"].salesforce_id.as_deref(), Some(NEW_CASE));

        // Nothing is created before the call ended.
        let mut state = CallState::new(CALL);
        state.apply(&assigned(6, "Case", "")).unwrap();
        assert_eq!(state.plan(), Plan::default());
    }

    #[test]
    fn a_refused_new_case_leaves_the_task_unlinked_with_the_reason() {
        let mut events = answered_call();
        events.push(assigned(6, "Case", ""));
        let mut state = CallState::new(CALL);
        for e in &events {
            state.apply(e).unwrap();
        }
        let case = state.plan().case.unwrap();
        state.record_case_rejected(&case.assignment_id, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Product required");
        let plan = state.plan();
        assert_eq!(plan.case, None);
        assert_eq!(plan.writes[0].fields.what_id, None);
        let note = state.tasks["u1"].note.clone().unwrap();
        assert!(note.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION"), "{note}");
        assert!(note.contains("Broken handset"), "{note}");
    }

    #[test]
    fn a_lead_keeps_the_who_and_no_what_is_set_next_to_it() {
        let mut events = answered_call();
        events.extend([related(5, "Lead", LEAD), assigned(6, "Case", CASE)]);
        let (state, plan) = fold(&events);
        let f = &plan.writes[0].fields;
        assert_eq!(f.who_id.as_deref(), Some(LEAD));
        assert_eq!(f.what_id, None);
        let note = state.tasks["u1"].note.clone().expect("the reason is kept");
        assert!(note.contains(CASE) && note.contains(LEAD), "{note}");
        assert!(note.contains("Lead"), "{note}");
        // The note is part of the stored sync state the gateway reads.
        let stored = serde_json::to_value(&state.tasks["u1"]).unwrap();
        assert_eq!(stored["note"], note.as_str());

        // A Case linked earlier is cleared when a Lead becomes the Who.
        let mut state = CallState::new(CALL);
        let mut events = answered_call();
        events.extend([related(5, "Contact", CONTACT), assigned(6, "Case", CASE)]);
        let (_, writes) = run_with_cases(&mut state, &events);
        assert_eq!(writes.last().unwrap().fields.what_id.as_deref(), Some(CASE));
        assert!(writes.iter().all(|w| w.clear.is_empty()));
        let (_, writes) = run_with_cases(&mut state, &[related(7, "Lead", LEAD)]);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].clear, vec!["WhatId"]);
        let body = writes[0].body(false);
        assert_eq!(body["WhoId"], LEAD);
        assert_eq!(body["WhatId"], serde_json::Value::Null);
        assert!(state.tasks["u1"].note.is_some());
        // A Contact again: the Case comes back and the note goes.
        let (_, writes) = run_with_cases(&mut state, &[related(8, "Contact", CONTACT)]);
        assert_eq!(writes[0].fields.what_id.as_deref(), Some(CASE));
        assert_eq!(state.tasks["u1"].note, None);
    }

    #[test]
    fn who_and_what_apply_to_every_task_of_the_call() {
        let events = vec![
            started(v1::Direction::Inbound, agent("u1", SF_USER)),
            event(2, Kind::Answered(CallAnswered { agent: agent("u2", "005000000000002AAA") })),
            event(3, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 40, ..Default::default() })),
            related(4, "Contact", CONTACT),
            assigned(5, "Opportunity", OPPORTUNITY),
        ];
        let (_, plan) = fold(&events);
        assert_eq!(plan.writes.len(), 2);
        for w in &plan.writes {
            assert_eq!(w.fields.who_id.as_deref(), Some(CONTACT), "{}", w.user_id);
            assert_eq!(w.fields.what_id.as_deref(), Some(OPPORTUNITY), "{}", w.user_id);
        }
    }

    #[test]
    fn records_that_cannot_be_linked_are_noted() {
        let mut events = answered_call();
        events.extend([related(5, "Contact", "not-an-id"), assigned(6, "Contract", CASE)]);
        let (state, plan) = fold(&events);
        assert_eq!(plan.writes[0].fields.who_id, None);
        assert_eq!(plan.writes[0].fields.what_id, None);
        let note = state.tasks["u1"].note.clone().unwrap();
        assert!(note.contains("not a Salesforce record id"), "{note}");
        assert!(note.contains("only a Case or Opportunity"), "{note}");
    }

    fn note(seq: u64, note_id: &str, text: &str) -> CallEvent {
        event(seq, Kind::Note(v1::CallNote { note_id: note_id.into(), user_id: "u1".into(), text: text.into() }))
    }

    fn rating(seq: u64, user: &str, score: u32, comment: &str) -> CallEvent {
        event(seq, Kind::Rating(v1::QualityRating { user_id: user.into(), score, comment: comment.into() }))
    }

    fn voicemail(seq: u64, id: &str) -> CallEvent {
        event(
            seq,
            Kind::VoicemailAvailable(v1::VoicemailAvailable {
                recording_id: id.into(),
                url: format!("https://gw.example.com/voicemails/{id}"),
                duration_ms: 62_000,
                user_id: "u1".into(),
                ended_by: "silence".into(),
                ..Default::default()
            }),
        )
    }

    fn quality(seq: u64, caller: f64, callee: f64) -> CallEvent {
        let leg = |leg: v1::Leg, mos: f64| v1::LegQuality { leg: leg as i32, mos, ..Default::default() };
        event(seq, Kind::Quality(v1::QualityReport { legs: vec![leg(v1::Leg::Caller, caller), leg(v1::Leg::Callee, callee)] }))
    }

    fn transferred(seq: u64, from: Option<Agent>, to: Option<Agent>) -> CallEvent {
        event(
            seq,
            Kind::Transferred(v1::CallTransferred {
                from,
                to,
                kind: v1::TransferKind::Blind as i32,
                to_number: String::new(),
            }),
        )
    }

    fn grace(seq: u64) -> CallEvent {
        let mut e = related(seq, "Contact", CONTACT);
        if let Some(Kind::Related(r)) = &mut e.kind {
            r.name = "Grace Hopper".into();
        }
        e
    }

    /// The dispositions by user, each event order giving the same.
    fn dispositions(events: &[CallEvent]) -> BTreeMap<String, String> {
        let (_, plan) = fold(events);
        let by_user: BTreeMap<String, String> =
            plan.writes.iter().map(|w| (w.user_id.clone(), w.fields.call_disposition.clone())).collect();
        for shift in 1..events.len() {
            let mut permuted = events.to_vec();
            permuted.rotate_left(shift);
            assert_eq!(fold(&permuted).1, plan, "rotation {shift}");
        }
        by_user
    }

    #[test]
    fn the_subject_names_the_related_record_else_the_number() {
        let mut state = CallState::new(CALL);
        let writes = run(&mut state, &answered_call());
        assert_eq!(writes[0].fields.subject, "Inbound call from +14155550100");
        // Related after the end: the Task is rewritten with the name.
        let writes = run(&mut state, &[grace(5)]);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].fields.subject, "Inbound call from Grace Hopper (+14155550100)");
        // A later record without a name: back to the number.
        let mut nameless = related(6, "Contact", CONTACT);
        if let Some(Kind::Related(r)) = &mut nameless.kind {
            r.name = " ".into();
        }
        assert_eq!(run(&mut state, &[nameless])[0].fields.subject, "Inbound call from +14155550100");

        // Outbound: the callee; the related event before `started`.
        let events = vec![
            grace(4),
            started(v1::Direction::Outbound, agent("u1", SF_USER)),
            event(2, Kind::Answered(CallAnswered { agent: None })),
            event(3, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 9, ..Default::default() })),
        ];
        assert_eq!(fold(&events).1.writes[0].fields.subject, "Outbound call to Grace Hopper (+14155550199)");

        // A long multi-byte name is cut to 255 UTF-16 units, whole characters only.
        let mut events = answered_call();
        let mut long = grace(5);
        if let Some(Kind::Related(r)) = &mut long.kind {
            r.name = format!("ab{}", "😀".repeat(200));
        }
        events.push(long);
        let subject = fold(&events).1.writes[0].fields.subject.clone();
        assert_eq!(subject.encode_utf16().count(), SHORT_TEXT_MAX - 1, "a pair that does not fit is left out whole");
        assert!(subject.starts_with("Inbound call from ab😀"), "{subject}");
        assert!(subject.ends_with('😀'), "{subject}");
    }

    #[test]
    fn voicemail_is_its_own_disposition() {
        let missed = |reason: v1::EndReason| {
            vec![
                started(v1::Direction::Inbound, agent("u1", SF_USER)),
                event(2, Kind::Ringing(CallRinging { agent: agent("u1", SF_USER) })),
                event(3, Kind::Ended(CallEnded { reason: reason as i32, total_seconds: 40, ..Default::default() })),
            ]
        };
        assert_eq!(dispositions(&missed(v1::EndReason::Voicemail))["u1"], "voicemail");
        assert_eq!(dispositions(&missed(v1::EndReason::NoAnswer))["u1"], "missed");
        assert_eq!(dispositions(&missed(v1::EndReason::Busy))["u1"], "busy");
        assert_eq!(dispositions(&missed(v1::EndReason::Failed))["u1"], "failed");
        // The end reason says no answer, the voicemail event says otherwise.
        let mut events = missed(v1::EndReason::NoAnswer);
        events.push(voicemail(4, "vm1"));
        assert_eq!(dispositions(&events)["u1"], "voicemail");
        // Taken by screening: answered, with the message kept as a link.
        let mut events = answered_call();
        events.push(voicemail(5, "vm1"));
        assert_eq!(dispositions(&events)["u1"], "answered");
    }

    #[test]
    fn the_agent_who_handed_the_call_over_has_a_transferred_task() {
        let u2 = || agent("u2", "005000000000002AAA");
        let mut events = answered_call();
        events.insert(3, transferred(4, agent("u1", SF_USER), u2()));
        events[4].sequence = 5;
        let by_user = dispositions(&events);
        assert_eq!(by_user["u1"], "transferred");
        assert_eq!(by_user["u2"], "answered");
        // Delivered twice and with the transfer first: the same.
        let mut doubled = vec![events[3].clone()];
        doubled.extend(events.iter().cloned());
        doubled.push(events[3].clone());
        let mut state = CallState::new(CALL);
        let writes = run(&mut state, &doubled);
        assert_eq!(writes.len(), 2, "one write per Task");
        assert_eq!(state.plan(), Plan::default());

        // Handed back: u1 has the call again, u2 handed it over.
        let mut back = events.clone();
        back.push(transferred(6, u2(), agent("u1", SF_USER)));
        let by_user = dispositions(&back);
        assert_eq!(by_user["u1"], "answered");
        assert_eq!(by_user["u2"], "transferred");
        // And away again: the latest transfer counts, whatever the order.
        back.push(transferred(7, agent("u1", SF_USER), u2()));
        let by_user = dispositions(&back);
        assert_eq!(by_user["u1"], "transferred");
        assert_eq!(by_user["u2"], "answered");

        // To an outside number; and a move to another device of the same agent.
        let mut outside = answered_call();
        outside.push(transferred(5, agent("u1", SF_USER), None));
        assert_eq!(dispositions(&outside)["u1"], "transferred");
        let mut moved = answered_call();
        moved.push(transferred(5, agent("u1", SF_USER), agent("u1", SF_USER)));
        assert_eq!(dispositions(&moved)["u1"], "answered");
    }

    #[test]
    fn notes_are_described_once_in_sequence_order() {
        let mut events = answered_call();
        events.extend([
            note(7, "n3", "Call back on Monday"),
            note(5, "n1", "Asked about the invoice"),
            note(6, "n2", "Sent the price list"),
            // The same note again under a new sequence (a replay by the gateway).
            note(8, "n1", "Asked about the invoice"),
            note(6, "n2", "Sent the price list"),
        ]);
        let mut state = CallState::new(CALL);
        let writes = run(&mut state, &events);
        let description = &writes.last().unwrap().fields.description;
        let lines: Vec<&str> = description.lines().filter(|l| l.starts_with("Ann Agent: ")).collect();
        assert_eq!(
            lines,
            vec!["Ann Agent: Asked about the invoice", "Ann Agent: Sent the price list", "Ann Agent: Call back on Monday"],
            "{description}"
        );
        assert!(description.contains("\n\nNotes:\n"), "{description}");
        // The replayed note and the duplicate of seq 6 changed nothing.
        assert_eq!(writes.len(), 4, "end, then one write per note");
        let (_, expected) = fold(&events);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(fold(&reversed).1, expected);
        assert_eq!(expected.writes[0].fields.description, *description);
    }

    #[test]
    fn quality_rating_and_voicemail_are_described_and_admin_recordings_are_not() {
        let mut events = answered_call();
        events.extend([
            // Applied in reverse: the later rating comes first.
            rating(6, "u1", 2, "crackling"),
            rating(8, "u1", 4, "fine after the first minute"),
            // Another agent's rating, kept apart.
            rating(9, "u0", 1, "not mine"),
            quality(7, 2.0, 2.0),
            quality(10, 4.34, 3.86),
            voicemail(11, "vm1"),
            recording(12, "r1", false),
            recording(13, "r-admin", true),
        ]);
        events.reverse();
        let (_, plan) = fold(&events);
        let d = &plan.writes[0].fields.description;
        assert!(d.contains("Measured quality (MOS): caller 4.3, callee 3.9\n"), "{d}");
        assert!(!d.contains("2.0"), "the older report does not count: {d}");
        assert!(d.contains("Agent's rating of the audio: 4/5 (fine after the first minute)\n"), "{d}");
        assert!(!d.contains("crackling") && !d.contains("not mine"), "{d}");
        assert!(d.contains("Voicemail (1m 02s): https://gw.example.com/voicemails/vm1\n"), "{d}");
        assert!(d.contains("https://gw.example.com/recordings/r1"), "{d}");
        assert!(!d.contains("r-admin"), "{d}");
        assert!(!d.contains(CUT_MARKER.trim()), "{d}");
    }

    fn private(agent: Option<Agent>) -> Option<Agent> {
        agent.map(|a| Agent { privacy_mode: true, ..a })
    }

    /// u1 answers (privacy off) and hands the call to u2 (privacy on), with
    /// a recording, a voicemail, a note, u2's rating and the quality.
    fn call_handed_to_a_private_agent() -> Vec<CallEvent> {
        let u2 = || private(agent("u2", "005000000000002AAA"));
        let mut events = answered_call();
        // Ended after the transfer (at 4 s): u2 talked for the call's 125 s.
        events[3].sequence = 9;
        events[3].occurred_at_ms = T0 + 4_000 + 125_000;
        events.extend([
            transferred(4, agent("u1", SF_USER), u2()),
            recording(5, "r1", false),
            voicemail(6, "vm1"),
            note(7, "n1", "Wants the invoice resent"),
            rating(8, "u2", 4, "clear"),
            quality(10, 4.34, 3.86),
        ]);
        events
    }

    #[test]
    fn an_agent_in_privacy_mode_gets_a_task_without_number_or_links_and_the_others_do_not() {
        let events = call_handed_to_a_private_agent();
        // The same plan in every order (`dispositions` rotates the events).
        assert_eq!(dispositions(&events)["u2"], "answered");
        let mut reversed = events.clone();
        reversed.reverse();
        let (state, plan) = fold(&events);
        assert_eq!(fold(&reversed).1, plan);
        assert!(state.agents["u2"].privacy_mode && !state.agents["u1"].privacy_mode);

        let task = |user: &str| plan.writes.iter().find(|w| w.user_id == user).unwrap().fields.clone();
        let normal = task("u1");
        assert_eq!(normal.subject, "Inbound call from +14155550100");
        assert!(normal.description.contains("Inbound call from +14155550100 (Carla Caller) to +14155550199\n"), "{}", normal.description);
        assert!(normal.description.contains("https://gw.example.com/recordings/r1"), "{}", normal.description);
        assert!(normal.description.contains("https://gw.example.com/voicemails/vm1"), "{}", normal.description);
        assert!(!normal.description.contains("privacy"), "{}", normal.description);

        let private = task("u2");
        assert_eq!(private.subject, "Inbound call");
        let d = &private.description;
        assert!(d.starts_with("Inbound call\nLogged in privacy mode: no number, no recording or voicemail link\n"), "{d}");
        // Nothing of the parties or the links anywhere in what is sent.
        let body = serde_json::to_string(&plan.writes.iter().find(|w| w.user_id == "u2").unwrap().body(true)).unwrap();
        for secret in ["+14155550100", "4155550100", "+14155550199", "Carla Caller", "https://", "r1", "vm1"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        // Result, quality, the agent's rating and the notes stay.
        assert!(d.contains("Result: answered; talk time 2m 05s; hung up by caller\n"), "{d}");
        assert!(d.contains("Measured quality (MOS): caller 4.3, callee 3.9\n"), "{d}");
        assert!(d.contains("Agent's rating of the audio: 4/5 (clear)\n"), "{d}");
        assert!(d.ends_with("Notes:\nAnn Agent: Wants the invoice resent"), "{d}");
        assert!(d.contains(&format!("Switchboard call id: {CALL}")), "{d}");
        assert_eq!(private.call_duration_in_seconds, 125);
    }

    #[test]
    fn a_private_subject_names_the_related_record_but_never_the_number() {
        let mut events = call_handed_to_a_private_agent();
        events.push(grace(11));
        let (_, plan) = fold(&events);
        let subject = |user: &str| plan.writes.iter().find(|w| w.user_id == user).unwrap().fields.subject.clone();
        assert_eq!(subject("u2"), "Inbound call from Grace Hopper");
        assert_eq!(subject("u1"), "Inbound call from Grace Hopper (+14155550100)");

        // An outbound call placed by an agent in privacy mode.
        let outbound = |related: Option<CallEvent>| {
            let mut events = vec![
                started(v1::Direction::Outbound, private(agent("u1", SF_USER))),
                event(2, Kind::Answered(CallAnswered { agent: None })),
                event(3, Kind::Ended(CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 9, ..Default::default() })),
            ];
            events.extend(related);
            fold(&events).1.writes[0].fields.clone()
        };
        let plain = outbound(None);
        assert_eq!(plain.subject, "Outbound call");
        assert!(!plain.description.contains("+1415555"), "{}", plain.description);
        assert_eq!(outbound(Some(grace(4))).subject, "Outbound call to Grace Hopper");
    }

    #[test]
    fn the_latest_event_naming_the_agent_sets_its_privacy_mode() {
        // Started and rang in privacy mode, answered with it off (seq 3):
        // the answer is the latest word, in any order.
        let mut events = answered_call();
        events[0] = started(v1::Direction::Inbound, private(agent("u1", SF_USER)));
        events[1] = event(2, Kind::Ringing(CallRinging { agent: private(agent("u1", SF_USER)) }));
        let (_, plan) = fold(&events);
        assert_eq!(plan.writes[0].fields.subject, "Inbound call from +14155550100");
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(fold(&reversed).1, plan);
        // Answered in privacy mode: private, whichever comes first.
        events[2] = event(3, Kind::Answered(CallAnswered { agent: private(agent("u1", SF_USER)) }));
        events[1] = event(2, Kind::Ringing(CallRinging { agent: agent("u1", SF_USER) }));
        events.reverse();
        assert_eq!(fold(&events).1.writes[0].fields.subject, "Inbound call");
        // A state stored before the field existed reads as privacy off.
        let mut stored = serde_json::to_value(&fold(&answered_call()).0).unwrap();
        for facts in stored["agents"].as_object_mut().unwrap().values_mut() {
            let facts = facts.as_object_mut().unwrap();
            assert!(facts.remove("privacy_mode").is_some() && facts.remove("privacy_mode_seq").is_some());
        }
        let restored: CallState = serde_json::from_value(stored).unwrap();
        assert!(!restored.agents["u1"].privacy_mode);
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary_with_a_marker() {
        // 40,000 characters, a third of them outside the BMP (two UTF-16 units).
        let text: String = "é中😀".repeat(40_000 / 3 + 1).chars().take(40_000).collect();
        assert_eq!(text.chars().count(), 40_000);
        let mut events = answered_call();
        events.extend([recording(5, "r1", false), note(6, "n1", &text)]);
        let (_, plan) = fold(&events);
        let d = &plan.writes[0].fields.description;
        let units = d.encode_utf16().count();
        assert!(units <= DESCRIPTION_MAX, "{units}");
        assert!(units >= DESCRIPTION_MAX - 1, "cut no shorter than needed: {units}");
        let kept = d.strip_suffix(CUT_MARKER).expect("ends with the marker");
        let (head, note_part) = kept.split_once("Ann Agent: ").unwrap();
        assert!(text.starts_with(note_part), "the note is cut, not altered");
        assert!(note_part.chars().count() > 10_000);
        assert!(head.contains("https://gw.example.com/recordings/r1"), "links survive the cut");
        assert!(head.contains(CALL));

        // Just within the limit: no cut, no marker.
        let (_, plan) = fold(&answered_call());
        let room = DESCRIPTION_MAX - plan.writes[0].fields.description.encode_utf16().count() - "\n\nNotes:\nAnn Agent: ".len();
        let fits = "é".repeat(room);
        let mut events = answered_call();
        events.push(note(5, "n1", &fits));
        let d = fold(&events).1.writes[0].fields.description.clone();
        assert_eq!(d.encode_utf16().count(), DESCRIPTION_MAX);
        assert!(d.ends_with(&fits), "{}", &d[d.len() - 80..]);
        let mut events = answered_call();
        events.push(note(5, "n1", &format!("{fits}é")));
        let d = fold(&events).1.writes[0].fields.description.clone();
        assert!(d.ends_with(CUT_MARKER));
        assert_eq!(d.encode_utf16().count(), DESCRIPTION_MAX);
    }

    #[test]
    fn unknown_kinds_are_ignored_once() {
        let mut state = CallState::new(CALL);
        let mut e = event(7, Kind::Ringing(CallRinging { agent: None }));
        e.kind = None;
        assert_eq!(state.apply(&e).unwrap(), Applied::Ignored);
        assert_eq!(state.apply(&e).unwrap(), Applied::Duplicate);
    }
}
