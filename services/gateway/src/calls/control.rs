//! Commands to live calls from outside the SIP side (the call-control API,
//! tests): a cheap clone handle that talks to the call manager.

use tokio::sync::{mpsc, oneshot};

pub use super::b2bua::Leg;
use super::writer::CallUpdate;
pub use super::writer::Assignment;
pub use super::routing::TransferTo;
pub use super::writer::AgentInfo;
pub use crate::media::relay::{RecordCommand, RecordingState, Side};

/// How the agent's side of an answered call is handed over (decision
/// 0014). The outside party's dialog is never touched: the new party
/// rings while the call goes on, and takes over when it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// F16: to the agent's other registered devices, or to `device_id`.
    Move { device_id: Option<String> },
    /// F8 blind: to a user, a group or an outside number.
    Blind(TransferTo),
    /// F8 warm: the far end is held (music) while the agent consults the
    /// target on a media bridge of its own; then completed or cancelled.
    Warm(TransferTo),
    /// F4: a parked call given to an agent (retrieved, or rung back to the
    /// agent who parked it).
    Unpark(TransferTo),
}

impl Handover {
    /// The `kind` label of `switchboard_call_transfers_total`.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Handover::Move { .. } => "move",
            Handover::Blind(_) => "blind",
            Handover::Warm(_) => "warm",
            Handover::Unpark(_) => "park",
        }
    }
}

/// A call an agent places from the softphone (F3, click-to-dial): its
/// devices ring first and the far end is called once one answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origination {
    pub user_id: String,
    /// An extension, a company number or an outside number, as typed.
    pub to: String,
    /// One of the agent's entitled caller IDs (checked by the caller of
    /// [`CallControl::originate`]); the agent's default otherwise.
    pub caller_id: Option<String>,
    /// One of the agent's devices; every registered one otherwise.
    pub device_id: Option<String>,
}

/// A call waiting in a park slot (F4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ParkedCall {
    /// The slot number, from 1: what agents retrieve the call by.
    pub slot: u32,
    pub call_id: String,
    /// The outside party's number (the caller inbound, the callee outbound).
    pub customer_number: String,
    /// The user id of the agent who parked it.
    pub parked_by: Option<String>,
    /// When it was parked, epoch milliseconds.
    pub parked_at_ms: i64,
}

/// The bridge side of the outside party (recorded on the left channel,
/// the one put on hold): the caller, except on an agent's outbound call.
pub fn customer_side(outbound: bool) -> Side {
    if outbound {
        Side::B
    } else {
        Side::A
    }
}

/// A change to a live call's media, carried out by its bridge without any
/// SIP towards the far end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// `side` hears music on hold; neither party hears the other.
    Hold { side: Side, on: bool },
    /// `side`'s audio is replaced by silence towards the other party.
    Mute { side: Side, on: bool },
    /// Plays RFC 4733 digits to `to`.
    Dtmf { to: Side, digits: String },
    Record(RecordCommand),
}

/// A call's media state after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaState {
    pub held: Option<Side>,
    pub muted: [bool; 2],
    pub recording: RecordingState,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no live call {0}")]
    NoSuchCall(String),
    #[error("call {0} is not answered yet; hold, mute, DTMF and recording apply to answered calls")]
    NotAnswered(String),
    #[error("call {0} has no media anchored in the gateway")]
    NoMedia(String),
    #[error("call {0} is not in voicemail being screened; screening starts while the caller leaves a message")]
    NotScreening(String),
    #[error("call {0} is not ringing any more; it can be declined only while it rings")]
    NotRinging(String),
    #[error("a rating is a score from 1 to 5, not {0}")]
    InvalidRating(u32),
    #[error("the call could not be looked up: {0}")]
    Store(String),
    #[error("cannot hand the call over: {0}")]
    TransferTarget(String),
    #[error("call {0} is already being transferred; wait for that to finish or cancel it")]
    TransferInProgress(String),
    #[error("{}; the call goes on as before", transfer_failure(*status))]
    TransferFailed { call_id: String, status: u16 },
    #[error("call {0} is not being transferred")]
    NoTransfer(String),
    #[error("call {0} has no consulted transfer target to hand it to; start a warm transfer and wait until the target answers")]
    NotConsulting(String),
    #[error("call {0} is parked; retrieve it from its slot first")]
    Parked(String),
    #[error("no call is parked in slot {0}; it may have been retrieved or ended")]
    ParkSlotEmpty(u32),
    #[error("call {0} does not ring for you")]
    NotRingingFor(String),
    #[error("device {0} is not one of yours")]
    DeviceNotFound(String),
    #[error("{0}")]
    NoDevice(String),
    /// The far end of a call placed from the softphone cannot be routed:
    /// `code` is the SIP status a phone dialling it would have got.
    #[error("{why}")]
    Unroutable { code: u16, why: String },
    #[error("the gateway is shutting down")]
    Stopped,
}

/// Why a transfer target did not take the call, for the agent.
fn transfer_failure(status: u16) -> String {
    match status {
        480 | 408 => "nobody answered in time".to_owned(),
        486 | 600 => "the target is busy".to_owned(),
        603 => "the target declined the call".to_owned(),
        487 => "the transfer was cancelled".to_owned(),
        200 => "the target hung up".to_owned(),
        s => format!("the target could not take the call (SIP {s})"),
    }
}

/// A request to the call manager.
#[derive(Debug)]
pub(crate) enum Command {
    Hold { call_id: String, leg: Leg, on: bool, reply: oneshot::Sender<Result<(), ControlError>> },
    Media { call_id: String, command: MediaCommand, reply: oneshot::Sender<Result<MediaState, ControlError>> },
    Rate { call_id: String, user_id: String, score: u32, comment: String, reply: oneshot::Sender<Result<(), ControlError>> },
    Screen { call_id: String, pick_up: bool, reply: oneshot::Sender<Result<(), ControlError>> },
    HangUp { call_id: String, reply: oneshot::Sender<Result<(), ControlError>> },
    Decline { call_id: String, reply: oneshot::Sender<Result<(), ControlError>> },
    Note { call_id: String, user_id: String, text: String, reply: oneshot::Sender<Result<String, ControlError>> },
    /// Salesforce context the agent gave the call (a related record, an
    /// assignment), live or ended.
    Annotate { call_id: String, update: CallUpdate, reply: oneshot::Sender<Result<(), ControlError>> },
    Transfer { call_id: String, handover: Handover, reply: oneshot::Sender<Result<Option<AgentInfo>, ControlError>> },
    CancelTransfer { call_id: String, reply: oneshot::Sender<Result<(), ControlError>> },
    CompleteTransfer { call_id: String, reply: oneshot::Sender<Result<Option<AgentInfo>, ControlError>> },
    Park { call_id: String, reply: oneshot::Sender<Result<ParkedCall, ControlError>> },
    Retrieve { slot: u32, user_id: String, reply: oneshot::Sender<Result<(String, Option<AgentInfo>), ControlError>> },
    ListParked { reply: oneshot::Sender<Vec<ParkedCall>> },
    Originate { request: Origination, reply: oneshot::Sender<Result<String, ControlError>> },
    Answer { call_id: String, user_id: String, device_id: Option<String>, reply: oneshot::Sender<Result<(), ControlError>> },
}

/// Handle to control live calls by their Switchboard call id.
#[derive(Debug, Clone)]
pub struct CallControl {
    tx: mpsc::UnboundedSender<Command>,
}

impl CallControl {
    pub(crate) fn new() -> (CallControl, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (CallControl { tx }, rx)
    }

    /// Holds, mutes, sends DTMF or controls the recording of an answered
    /// call, in its media bridge; answers with the media state after it.
    pub async fn media(&self, call_id: &str, command: MediaCommand) -> Result<MediaState, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Media { call_id: call_id.to_owned(), command, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Screening (F13): while the caller leaves a voicemail, rings the
    /// callee's devices again; the one that answers listens without being
    /// heard.
    pub async fn screen(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Screen { call_id: call_id.to_owned(), pick_up: false, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// The screening device takes the call: the voicemail ends, what the
    /// caller said so far is kept, and the two talk.
    pub async fn pick_up(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Screen { call_id: call_id.to_owned(), pick_up: true, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Records an agent's 1–5 rating of a call's audio (live or ended) as a
    /// `call.rating` event.
    pub async fn rate(&self, call_id: &str, user_id: &str, score: u32, comment: &str) -> Result<(), ControlError> {
        if !(1..=5).contains(&score) {
            return Err(ControlError::InvalidRating(score));
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Rate { call_id: call_id.to_owned(), user_id: user_id.to_owned(), score, comment: comment.to_owned(), reply };
        self.tx.send(command).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Ends an answered call: BYE to both legs, `call.ended` with the
    /// gateway as the side that hung up.
    pub async fn hang_up(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::HangUp { call_id: call_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Declines a ringing call: the caller goes to the callee's voicemail,
    /// or is answered 603 Decline without one.
    pub async fn decline(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Decline { call_id: call_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Records an agent's note on a call (live or ended) as a `call.note`
    /// event; answers the note's id.
    pub async fn note(&self, call_id: &str, user_id: &str, text: &str) -> Result<String, ControlError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Note { call_id: call_id.to_owned(), user_id: user_id.to_owned(), text: text.to_owned(), reply };
        self.tx.send(command).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Records the Salesforce record (Contact, Lead or Account) the agent
    /// says the customer is (F15), during or after the call.
    pub async fn relate(&self, call_id: &str, user_id: &str, record_id: &str, object: &str, name: &str) -> Result<(), ControlError> {
        let update = CallUpdate::Related { user_id: user_id.to_owned(), record_id: record_id.to_owned(), object: object.to_owned(), name: name.to_owned() };
        self.annotate(call_id, update).await
    }

    /// Records the Case or Opportunity the agent assigned the call to, or
    /// the new Case it asked for (F10, F11), during or after the call.
    pub async fn assign(&self, call_id: &str, assignment: Assignment) -> Result<(), ControlError> {
        self.annotate(call_id, CallUpdate::Assigned { assignment }).await
    }

    async fn annotate(&self, call_id: &str, update: CallUpdate) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Annotate { call_id: call_id.to_owned(), update, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Hands the agent's side of an answered call over (F8 blind transfer,
    /// F16 move) and waits until the new party answered (answers the agent
    /// who has the call now; `None` for an outside number) or did not
    /// ([`ControlError::TransferFailed`]: the call goes on as before). At
    /// most the ring timeout. A warm transfer answers once the target
    /// answered and is being consulted (who it is); the call is handed
    /// over by [`CallControl::complete_transfer`].
    pub async fn transfer(&self, call_id: &str, handover: Handover) -> Result<Option<AgentInfo>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Transfer { call_id: call_id.to_owned(), handover, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Ends a warm transfer's consultation by handing the call to the
    /// consulted target (the agent is released, the far end resumed and
    /// connected to the target); answers who has the call now.
    pub async fn complete_transfer(&self, call_id: &str) -> Result<Option<AgentInfo>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::CompleteTransfer { call_id: call_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Stops a transfer or move still ringing, or a warm transfer's
    /// consultation (the target is hung up, the far end resumed): the
    /// call goes on with the agent.
    pub async fn cancel_transfer(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::CancelTransfer { call_id: call_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Parks an answered call (F4): the agent's phone is hung up and the far
    /// end hears music in the slot answered, until an agent retrieves it or
    /// the park timeout rings the agent back.
    pub async fn park(&self, call_id: &str) -> Result<ParkedCall, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Park { call_id: call_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Rings every device of `user_id` for the call parked in `slot` and
    /// waits until one answered (answers the call id and who has it now) or
    /// none did ([`ControlError::TransferFailed`]: it stays parked).
    pub async fn retrieve(&self, slot: u32, user_id: &str) -> Result<(String, Option<AgentInfo>), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Retrieve { slot, user_id: user_id.to_owned(), reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// The calls waiting in park slots, by slot.
    pub async fn parked(&self) -> Result<Vec<ParkedCall>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::ListParked { reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    /// Places a call for an agent (F3, click-to-dial; RFC 3725 third-party
    /// call control with the media anchored in the gateway): the agent's
    /// device(s) ring with the auto-answer hints, and once one answers the
    /// far end is called as if that device had dialled it. Answers the new
    /// call's id as soon as the agent's devices are being called; the rest
    /// arrives as call events.
    pub async fn originate(&self, request: Origination) -> Result<String, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Originate { request, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Answers a call ringing for `user_id` from the softphone: its other
    /// forks are cancelled and the agent's chosen device (default: its first
    /// registered one) is invited again with the auto-answer hints. Answers
    /// once that device is being called; the call is answered when it
    /// answers (`call.answered`).
    pub async fn answer(&self, call_id: &str, user_id: &str, device_id: Option<String>) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Answer { call_id: call_id.to_owned(), user_id: user_id.to_owned(), device_id, reply };
        self.tx.send(command).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Puts one leg of an answered call on hold (`on`) or resumes it with a
    /// re-INVITE on that leg only (SIP-level hold of the phone's stream).
    pub async fn hold(&self, call_id: &str, leg: Leg, on: bool) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Hold { call_id: call_id.to_owned(), leg, on, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }
}
