//! The agent's calls and what it can do on them (F3, F4, F6, F8, F12, F13,
//! F16, F17): place a call (click-to-dial), answer a ringing one, list,
//! hold, mute, DTMF, recording, hang up, screen and pick up, move to
//! another device, transfer, park and retrieve, notes, rate.
//!
//! An agent sees and controls only the calls it may see on its event
//! stream (its own, ringing for it, answered by it, transferred or parked
//! to it); any other id is answered 404, exactly like an id that does not
//! exist, so ids of other agents' calls cannot be probed. Hold puts the far
//! end on hold (it hears music); mute silences the agent towards the far
//! end. Each operation answers with the call's state after it.

use axum::extract::State;
use axum::http::StatusCode;
use tracing::info;
use axum::Extension;
use serde::{Deserialize, Serialize};
use switchboard_store::sqlx;
use utoipa::ToSchema;

use super::AgentApi;
use crate::api::auth::Principal;
use crate::api::problem::{Json, Path, Problem};
use crate::calls::control::{customer_side, ControlError, Handover, MediaCommand, MediaState, Origination, ParkedCall, RecordCommand, RecordingState, Side, TransferTo};
use crate::calls::live::{CallDirection, CallParty, CallState, CallView, RecordingStatus};

/// `GET /v1/calls`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallList {
    /// The agent's live calls (and those ended in the last minute), oldest first.
    pub calls: Vec<CallView>,
}

/// Body of hold and mute.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"on": true}))]
pub struct Toggle {
    /// `true` to hold (mute), `false` to resume (unmute).
    pub on: bool,
}

/// Body of `POST /v1/calls/{id}/dtmf`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"digits": "1234#"}))]
pub struct Digits {
    /// 0–9, *, #, A–D; at most 32.
    pub digits: String,
}

/// Body of `POST /v1/calls/{id}/recording`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"action": "pause"}))]
pub struct RecordingAction {
    pub action: RecordingVerb,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingVerb {
    Start,
    Stop,
    Pause,
    Resume,
}

/// Body of `POST /v1/calls/{id}/notes` (F12).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "Customer wants the March invoice re-sent to accounts@example.com"}))]
pub struct NewNote {
    /// 1 to 32,000 characters.
    pub text: String,
}

/// A note as stored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Note {
    pub note_id: String,
    pub call_id: String,
}

/// Body of `POST /v1/calls/{id}/rating` (F17).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"score": 4, "comment": "slight echo"}))]
pub struct Rating {
    /// 1 (bad) to 5 (excellent).
    pub score: u32,
    /// At most 1,000 characters.
    #[serde(default)]
    pub comment: String,
}

/// Body of `POST /v1/calls/{id}/move` (F16).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"device_id": "0193a1d2-5b7e-7c3a-9f00-4d2c1b0a9e88"}))]
pub struct MoveRequest {
    /// The device to move the call to; without it, every other registered
    /// device of the agent rings and the first to answer takes the call.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// Who a call is transferred to: exactly one of the fields.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTarget {
    /// A Switchboard user: every registered device of the user rings.
    #[serde(default)]
    pub user_id: Option<String>,
    /// A Salesforce user (15 or 18 characters), linked to a Switchboard user.
    #[serde(default)]
    pub salesforce_user_id: Option<String>,
    /// An extension or company number (a user or a group: its members ring
    /// as a call to it would), or an outside number through the trunk.
    #[serde(default)]
    pub number: Option<String>,
}

/// How the call is transferred.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// Without consulting: the target rings while the agent stays on the
    /// call, and takes it over when it answers.
    #[default]
    Blind,
    /// Consulting first: the far end hears music while the target rings
    /// and then talks with the agent alone; `transfer/complete` hands the
    /// call over, `transfer/cancel` takes it back.
    Warm,
}

/// Body of `POST /v1/calls/{id}/transfer` (F8).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": {"number": "204"}, "mode": "blind"}))]
pub struct TransferRequest {
    pub to: TransferTarget,
    #[serde(default)]
    pub mode: TransferMode,
}

/// Body of `POST /v1/calls` (F3, click-to-dial).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": "+44 20 7123 4567", "caller_id": "+14155550100", "device_id": "0193a1d2-5b7e-7c3a-9f00-4d2c1b0a9e88"}))]
pub struct NewCall {
    /// An extension, a company number (both ring internally) or an outside
    /// number, as dialled on a phone: digits, `*`, `#` and a leading `+`;
    /// spaces, dashes, dots and parentheses are ignored.
    pub to: String,
    /// The number the far end is shown: one of `GET /v1/me/caller-ids`
    /// (default: the first of them).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// The agent's device that places the call; without it, every
    /// registered device of the agent rings and the first to answer does.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// Body of `POST /v1/calls/{id}/answer`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"device_id": "0193a1d2-5b7e-7c3a-9f00-4d2c1b0a9e88"}))]
pub struct AnswerRequest {
    /// The agent's device that takes the call; default: its first
    /// registered device. (A browser softphone leg, WebRTC, will be one
    /// more choice here.)
    #[serde(default)]
    pub device_id: Option<String>,
}

fn not_found(call_id: &str) -> Problem {
    Problem::not_found("call_not_found", format!("no call {call_id} of yours is live; it may have ended"))
}

pub(super) fn control_problem(e: ControlError) -> Problem {
    match e {
        ControlError::NoSuchCall(id) => not_found(&id),
        e @ (ControlError::NotAnswered(_) | ControlError::NotScreening(_) | ControlError::NotRinging(_)) => Problem::conflict("call_state", e.to_string()),
        e @ ControlError::NoMedia(_) => Problem::conflict("no_media", e.to_string()),
        e @ ControlError::InvalidRating(_) => Problem::bad_request("invalid_rating", e.to_string()),
        e @ ControlError::Stopped => Problem::unavailable("shutting_down", e.to_string()).with_retry_after(5),
        ControlError::Store(e) => Problem::internal("looking up the call failed", &e),
        e @ ControlError::TransferTarget(_) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "transfer_target", e.to_string()),
        e @ ControlError::TransferInProgress(_) => Problem::conflict("transfer_in_progress", e.to_string()),
        e @ ControlError::TransferFailed { .. } => Problem::conflict("transfer_failed", e.to_string()),
        e @ (ControlError::NoTransfer(_) | ControlError::NotConsulting(_)) => Problem::conflict("no_transfer", e.to_string()),
        e @ ControlError::Parked(_) => Problem::conflict("call_parked", e.to_string()),
        e @ ControlError::ParkSlotEmpty(_) => Problem::not_found("park_slot_empty", e.to_string()),
        e @ ControlError::NotRingingFor(_) => Problem::conflict("call_state", e.to_string()),
        e @ ControlError::DeviceNotFound(_) => Problem::not_found("device_not_found", e.to_string()),
        e @ ControlError::NoDevice(_) => Problem::conflict("no_device", e.to_string()),
        ControlError::Unroutable { code, why } => match code {
            484 => Problem::bad_request("invalid_number", why),
            403 => Problem::forbidden("caller_id_not_allowed", why),
            503 => Problem::unavailable("routing_unavailable", why).with_retry_after(5),
            _ => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "no_route", why),
        },
    }
}

/// The number as a phone would dial it (separators dropped), if it is one.
fn dialable(raw: &str) -> Option<String> {
    let number: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let ok = !number.is_empty()
        && number.len() <= 32
        && number.char_indices().all(|(i, c)| c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0))
        && number != "+";
    ok.then_some(number)
}

impl AgentApi {
    /// A live call the agent may see, or an ended one the agent answered
    /// (ratings and notes come after the call too).
    pub(super) async fn own_call_or_answered(&self, me: &Principal, call_id: &str) -> Result<(), Problem> {
        if self.own_call(me, call_id).is_ok() {
            return Ok(());
        }
        let agent: Option<(Option<String>,)> = sqlx::query_as("SELECT agent_user_id FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(|e| Problem::internal("looking up the call failed", &e))?;
        if agent.and_then(|(u,)| u).as_deref() == Some(me.user_id.as_str()) {
            Ok(())
        } else {
            Err(not_found(call_id))
        }
    }

    /// The call, if the agent is the one who has it (who answered it, or
    /// placed it): only that agent may hand it over.
    fn answered_by_me(&self, me: &Principal, call_id: &str) -> Result<CallView, Problem> {
        self.own_call(me, call_id)?;
        self.live.get(call_id).filter(|v| v.agent_user_id.as_deref() == Some(me.user_id.as_str())).ok_or_else(|| not_found(call_id))
    }

    /// Hands the call over and answers its view with who has it now.
    async fn hand_over(&self, me: &Principal, call_id: &str, handover: Handover) -> Result<Json<CallView>, Problem> {
        let mut view = self.answered_by_me(me, call_id)?;
        let kind = handover.kind_label();
        let warm = matches!(handover, Handover::Warm(_));
        let to = self.control.transfer(call_id, handover).await.map_err(control_problem)?;
        let to = to.as_ref().map_or("outside number", |a| a.user_id.as_str()).to_owned();
        if warm {
            // Consulting: still the agent's call, the far end on hold.
            info!(call_id, kind, from = %me.user_id, to, "consulting through the agent API");
            view.held = Some(party(sides(&view).0));
            return Ok(Json(view));
        }
        info!(call_id, kind, from = %me.user_id, to, "handed over through the agent API");
        view.agent_user_id = (to != "outside number").then_some(to);
        view.held = None; // whoever took the call talks with the far end
        Ok(Json(view))
    }

    /// The call, if the agent may see it.
    pub(super) fn own_call(&self, me: &Principal, call_id: &str) -> Result<CallView, Problem> {
        self.live.view_for(call_id, &me.user_id).ok_or_else(|| not_found(call_id))
    }

    async fn media(&self, me: &Principal, call_id: &str, command: impl FnOnce(&CallView) -> MediaCommand) -> Result<Json<CallView>, Problem> {
        let view = self.own_call(me, call_id)?;
        let state = self.control.media(call_id, command(&view)).await.map_err(control_problem)?;
        Ok(Json(with_media(view, state)))
    }
}

/// The call view with the media state the manager answered (the stream's
/// copy follows once the change is committed).
fn with_media(mut view: CallView, state: MediaState) -> CallView {
    view.held = state.held.map(party);
    view.muted = [Side::A, Side::B].into_iter().filter(|s| state.muted[*s as usize]).map(party).collect();
    view.recording = match state.recording {
        RecordingState::Off => RecordingStatus::Off,
        RecordingState::Recording => RecordingStatus::Recording,
        RecordingState::Paused => RecordingStatus::Paused,
    };
    view
}

fn party(side: Side) -> CallParty {
    match side {
        Side::A => CallParty::Caller,
        Side::B => CallParty::Callee,
    }
}

/// (customer, agent) sides of a call's bridge.
fn sides(view: &CallView) -> (Side, Side) {
    let customer = customer_side(view.direction == CallDirection::Outbound);
    let agent = if customer == Side::A { Side::B } else { Side::A };
    (customer, agent)
}

/// Places a call (F3, click-to-dial). The gateway first calls the agent's
/// device — the one named, else every registered one — asking desk phones
/// to answer by themselves; the first to answer is the agent's side, and
/// only then is `to` called, exactly as if that phone had dialled it (an
/// extension or company number rings internally, anything else leaves
/// through the trunk presenting `caller_id`). While the far end rings the
/// agent hears its early media, or a ringback tone. Answers 201 with the
/// new call (ringing) as soon as the agent's device is being called; what
/// follows arrives on the event stream. The agent's device not answering,
/// or the far end failing, ends the call (`call.ended`).
#[utoipa::path(post, path = "/v1/calls", tag = "calls", security(("session" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried request places the call once")),
    request_body = NewCall,
    responses((status = 201, body = CallView), (status = 400, description = "`to` is not a number or extension", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "the caller ID is not one of the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "the device is not one of the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "the agent has no registered device", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the number cannot be reached from here (no trunk, nobody to ring)", body = Problem, content_type = "application/problem+json")))]
pub async fn place(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Json(c): Json<NewCall>) -> Result<(StatusCode, Json<CallView>), Problem> {
    let Some(to) = dialable(&c.to) else {
        return Err(Problem::bad_request("invalid_number", format!("{:?} is not a number or extension that can be dialled", c.to)));
    };
    let caller_id = match c.caller_id.as_deref().map(str::trim) {
        None => None,
        Some(raw) => {
            let entitled = api.directory.entitled_numbers(&me.user_id).await.map_err(|e| Problem::internal("reading the agent's caller IDs failed", &e))?;
            match crate::directory::normalise_number(raw).ok().filter(|n| entitled.contains(n)) {
                Some(n) => Some(n),
                None => return Err(Problem::forbidden("caller_id_not_allowed", format!("{raw} is not one of your caller IDs (GET /v1/me/caller-ids)"))),
            }
        }
    };
    let request = Origination { user_id: me.user_id.clone(), to: to.clone(), caller_id, device_id: c.device_id };
    // The call as `call.started` shows it (ringing), even when the agent's
    // phone answers by itself before this answer leaves.
    let mut stream = api.live.subscribe(&me.user_id).events;
    let id = api.control.originate(request).await.map_err(control_problem)?;
    info!(call_id = %id, user_id = %me.user_id, to, "call placed through the agent API");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(event) = stream.recv().await {
            if let Some(call) = event.call.as_ref().filter(|c| c.id == id) {
                return Some(call.clone());
            }
        }
        None
    })
    .await;
    match first.ok().flatten().or_else(|| api.live.view_for(&id, &me.user_id)) {
        Some(view) => Ok((StatusCode::CREATED, Json(view))),
        None => Err(Problem::unavailable("call_state_pending", format!("call {id} was placed but its state is not recorded yet; GET /v1/calls/{id}")).with_retry_after(1)),
    }
}

/// Answers a call ringing for the agent from the softphone: the devices
/// still ringing are cancelled and the chosen device (default: the agent's
/// first registered one) is called again, asked to answer by itself (desk
/// phones that allow it pick up without a hand on the handset). The call
/// is answered when that device answers (`call.answered` on the stream).
#[utoipa::path(post, path = "/v1/calls/{id}/answer", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = AnswerRequest,
    responses((status = 200, body = CallView), (status = 404, description = "no such call of the agent's, or the device is not the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "the call no longer rings (or not for the agent), or the agent has no registered device", body = Problem, content_type = "application/problem+json")))]
pub async fn answer(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(a): Json<AnswerRequest>,
) -> Result<Json<CallView>, Problem> {
    let view = api.own_call(&me, &id)?;
    if view.state != CallState::Ringing {
        return Err(Problem::conflict("call_state", format!("call {id} is not ringing; only a ringing call can be answered")));
    }
    api.control.answer(&id, &me.user_id, a.device_id).await.map_err(control_problem)?;
    info!(call_id = %id, user_id = %me.user_id, "answered through the agent API");
    Ok(Json(view))
}

/// The agent's calls.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", security(("session" = [])),
    responses((status = 200, body = CallList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Json<CallList> {
    Json(CallList { calls: api.live.for_user(&me.user_id) })
}

/// One of the agent's calls.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    api.own_call(&me, &id).map(Json)
}

/// Holds the far end (it hears music) or resumes it.
#[utoipa::path(post, path = "/v1/calls/{id}/hold", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = Toggle,
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "the call is not answered", body = Problem, content_type = "application/problem+json")))]
pub async fn hold(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(t): Json<Toggle>) -> Result<Json<CallView>, Problem> {
    api.media(&me, &id, |v| MediaCommand::Hold { side: sides(v).0, on: t.on }).await
}

/// Mutes the agent towards the far end, or unmutes.
#[utoipa::path(post, path = "/v1/calls/{id}/mute", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = Toggle,
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn mute(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(t): Json<Toggle>) -> Result<Json<CallView>, Problem> {
    api.media(&me, &id, |v| MediaCommand::Mute { side: sides(v).1, on: t.on }).await
}

/// Sends DTMF digits to the far end (RFC 4733).
#[utoipa::path(post, path = "/v1/calls/{id}/dtmf", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "send one: a retried request must not press the keys twice")),
    request_body = Digits,
    responses((status = 200, body = CallView), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn dtmf(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(d): Json<Digits>) -> Result<Json<CallView>, Problem> {
    if d.digits.is_empty() || d.digits.len() > 32 || !d.digits.chars().all(|c| c.is_ascii_digit() || "*#ABCDabcd".contains(c)) {
        return Err(Problem::bad_request("invalid_digits", "digits are 1 to 32 of 0-9, *, # and A-D"));
    }
    let digits = d.digits.to_ascii_uppercase();
    api.media(&me, &id, |v| MediaCommand::Dtmf { to: sides(v).0, digits }).await
}

/// Starts, stops, pauses or resumes the agent's recording (F6).
#[utoipa::path(post, path = "/v1/calls/{id}/recording", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = RecordingAction,
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn recording(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(r): Json<RecordingAction>,
) -> Result<Json<CallView>, Problem> {
    let cmd = match r.action {
        RecordingVerb::Start => RecordCommand::Start { admin_only: false },
        RecordingVerb::Stop => RecordCommand::Stop,
        RecordingVerb::Pause => RecordCommand::Pause,
        RecordingVerb::Resume => RecordCommand::Resume,
    };
    api.media(&me, &id, |_| MediaCommand::Record(cmd)).await
}

/// Hangs the call up.
#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn hangup(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let mut view = api.own_call(&me, &id)?;
    api.control.hang_up(&id).await.map_err(control_problem)?;
    view.state = CallState::Ended;
    Ok(Json(view))
}

/// Declines a call ringing for the agent: the caller goes to the agent's
/// voicemail (or hears 603 Decline when voicemail is off).
#[utoipa::path(post, path = "/v1/calls/{id}/decline", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "the call no longer rings", body = Problem, content_type = "application/problem+json")))]
pub async fn decline(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let view = api.own_call(&me, &id)?;
    api.control.decline(&id).await.map_err(control_problem)?;
    Ok(Json(view))
}

/// Listens to the voicemail the caller is leaving (F13): the agent's
/// devices ring, and the one that answers hears the caller unheard.
#[utoipa::path(post, path = "/v1/calls/{id}/screen", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "the caller is not leaving a voicemail", body = Problem, content_type = "application/problem+json")))]
pub async fn screen(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let view = api.own_call(&me, &id)?;
    api.control.screen(&id).await.map_err(control_problem)?;
    Ok(Json(view))
}

/// Takes the screened call: the voicemail ends (what was said is kept)
/// and the agent talks with the caller.
#[utoipa::path(post, path = "/v1/calls/{id}/pick-up", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn pick_up(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let view = api.own_call(&me, &id)?;
    api.control.pick_up(&id).await.map_err(control_problem)?;
    Ok(Json(view))
}

/// Rates the call's audio, during or after the call (F17).
#[utoipa::path(post, path = "/v1/calls/{id}/rating", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = Rating,
    responses((status = 204, description = "recorded as a call.rating event"), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn rate(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(r): Json<Rating>) -> Result<StatusCode, Problem> {
    if r.comment.chars().count() > 1000 {
        return Err(Problem::bad_request("invalid_rating", "the comment is at most 1,000 characters"));
    }
    api.own_call_or_answered(&me, &id).await?;
    api.control.rate(&id, &me.user_id, r.score, &r.comment).await.map_err(control_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a note to the call, during or after it (F12). A call takes any
/// number of notes; each is a `call.note` event with its own id, so none
/// is lost or doubled (send an `Idempotency-Key` when retrying).
#[utoipa::path(post, path = "/v1/calls/{id}/notes", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "a retried request adds the note once")),
    request_body = NewNote,
    responses((status = 201, body = Note), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn add_note(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(n): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), Problem> {
    let chars = n.text.chars().count();
    if n.text.trim().is_empty() || chars > 32_000 {
        return Err(Problem::bad_request("invalid_note", "a note is 1 to 32,000 characters of text"));
    }
    api.own_call_or_answered(&me, &id).await?;
    let note_id = api.control.note(&id, &me.user_id, &n.text).await.map_err(control_problem)?;
    Ok((StatusCode::CREATED, Json(Note { note_id, call_id: id })))
}

/// Moves the call to another of the agent's devices (F16): they ring (or
/// the one named) while the call goes on here; the first to answer takes
/// it and this device is hung up. The far end notices nothing. Answers
/// once a device answered, or 409 `transfer_failed` when none did within
/// the ring timeout (the call stays where it was).
#[utoipa::path(post, path = "/v1/calls/{id}/move", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = MoveRequest,
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not answered, already moving, or no device answered", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "no other device can ring, or the device is not the agent's", body = Problem, content_type = "application/problem+json")))]
pub async fn move_call(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(m): Json<MoveRequest>,
) -> Result<Json<CallView>, Problem> {
    api.hand_over(&me, &id, Handover::Move { device_id: m.device_id }).await
}

/// Transfers the call (F8) to a user, a group or an outside number: the
/// target rings while the agent stays on the call; when it answers it
/// takes the call over (it becomes the call's agent) and the agent's phone
/// is hung up. The far end notices nothing. Answers once the target
/// answered, or 409 `transfer_failed` when it did not (busy, declined, no
/// answer within the ring timeout: the call goes on with the agent).
#[utoipa::path(post, path = "/v1/calls/{id}/transfer", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = TransferRequest,
    responses((status = 200, body = CallView), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not answered, already transferring, or the target did not take the call", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the target is unknown or cannot ring", body = Problem, content_type = "application/problem+json")))]
pub async fn transfer(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(t): Json<TransferRequest>,
) -> Result<Json<CallView>, Problem> {
    api.answered_by_me(&me, &id)?;
    let to = match (t.to.user_id, t.to.salesforce_user_id, t.to.number) {
        (Some(user_id), None, None) => TransferTo::User(user_id),
        (None, Some(sf), None) => match api.directory.user_by_salesforce_id(sf.trim()).await {
            Ok(Some(user)) => TransferTo::User(user.id),
            Ok(None) => {
                return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "transfer_target", format!("no Switchboard user is linked to Salesforce user {sf}")))
            }
            Err(e) => return Err(Problem::internal("looking up the Salesforce user failed", &e)),
        },
        (None, None, Some(number)) if !number.trim().is_empty() => TransferTo::Number(number.trim().to_owned()),
        _ => return Err(Problem::bad_request("invalid_transfer_target", "`to` names exactly one of user_id, salesforce_user_id or number")),
    };
    if to == TransferTo::User(me.user_id.clone()) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "transfer_target", "the call is already yours; to take it on another phone, move it"));
    }
    let handover = match t.mode {
        TransferMode::Blind => Handover::Blind(to),
        TransferMode::Warm => Handover::Warm(to),
    };
    api.hand_over(&me, &id, handover).await
}

/// Completes a warm transfer: the consulted target takes the call (it
/// becomes the call's agent), the agent's phone is hung up and the far end,
/// off hold, talks with the target.
#[utoipa::path(post, path = "/v1/calls/{id}/transfer/complete", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "no warm transfer's target is being consulted", body = Problem, content_type = "application/problem+json")))]
pub async fn complete_transfer(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let mut view = api.answered_by_me(&me, &id)?;
    let to = api.control.complete_transfer(&id).await.map_err(control_problem)?;
    info!(call_id = %id, from = %me.user_id, to = to.as_ref().map_or("outside number", |a| a.user_id.as_str()), "warm transfer completed through the agent API");
    view.agent_user_id = to.map(|a| a.user_id);
    view.held = None;
    Ok(Json(view))
}

/// Stops a transfer or move that is still ringing, or a warm transfer's
/// consultation: the target is cancelled or hung up, the far end is taken
/// off hold, and the call goes on with the agent (a transfer request
/// still waiting answers 409 `transfer_failed`).
#[utoipa::path(post, path = "/v1/calls/{id}/transfer/cancel", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "nothing is being transferred", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel_transfer(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<CallView>, Problem> {
    let view = api.answered_by_me(&me, &id)?;
    api.control.cancel_transfer(&id).await.map_err(control_problem)?;
    Ok(Json(view))
}

/// `GET /v1/parked`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParkedList {
    /// Every parked call of the gateway, by slot.
    pub parked: Vec<ParkedCall>,
}

/// Parks the call (F4): the agent's phone is hung up and the far end hears
/// music in a numbered slot, where any agent can retrieve it; nobody doing
/// so within `sip.park_timeout_secs` rings the agent back.
#[utoipa::path(post, path = "/v1/calls/{id}/park", tag = "calls", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = ParkedCall), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not answered, being transferred, or parked already", body = Problem, content_type = "application/problem+json")))]
pub async fn park(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<Json<ParkedCall>, Problem> {
    api.answered_by_me(&me, &id)?;
    let parked = api.control.park(&id).await.map_err(control_problem)?;
    info!(call_id = %id, slot = parked.slot, by = %me.user_id, "parked through the agent API");
    Ok(Json(parked))
}

/// The parked calls, for every agent to see and retrieve.
#[utoipa::path(get, path = "/v1/parked", tag = "calls", security(("session" = [])),
    responses((status = 200, body = ParkedList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_parked(State(api): State<AgentApi>, Extension(_me): Extension<Principal>) -> Result<Json<ParkedList>, Problem> {
    let parked = api.control.parked().await.map_err(control_problem)?;
    Ok(Json(ParkedList { parked }))
}

/// Retrieves the call parked in `slot`: every device of the agent rings,
/// and the first to answer takes the call (the agent becomes its agent,
/// the far end stops hearing music). Answers once a device answered, or
/// 409 `transfer_failed` when none did (the call stays parked).
#[utoipa::path(post, path = "/v1/parked/{slot}/retrieve", tag = "calls", security(("session" = [])), params(("slot" = u32, Path, description = "park slot"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key answer the first answer")),
    responses((status = 200, body = CallView), (status = 404, description = "nothing parked in the slot", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "being retrieved already, or no device answered", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the agent has no device that can ring", body = Problem, content_type = "application/problem+json")))]
pub async fn retrieve(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(slot): Path<u32>) -> Result<Json<CallView>, Problem> {
    let (call_id, to) = api.control.retrieve(slot, &me.user_id).await.map_err(control_problem)?;
    info!(call_id = %call_id, slot, by = %me.user_id, "retrieved through the agent API");
    let mut view = api.live.get(&call_id).ok_or_else(|| not_found(&call_id))?;
    view.agent_user_id = to.map(|a| a.user_id);
    view.held = None;
    Ok(Json(view))
}
