//! The softphone page as the agent's browser phone: its registration, and
//! the SDP exchanges of its WebRTC legs (no SIP in the browser).
//!
//! `POST /v1/softphone` registers the page (a random `instance` per page
//! load, refreshed every 25 s or so): calls for the agent then ring in the
//! browser too, and the answer's `device_id` is what `POST /v1/calls`,
//! `/answer` and `/move` take to use the browser. Each browser leg comes as
//! a `webrtc.offer` event on the agent's stream; the page answers it with
//! `POST /v1/webrtc/legs/{id}/answer`, and after a network change offers an
//! ICE restart with `POST /v1/webrtc/legs/{id}/offer`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AgentApi;
use crate::api::auth::Principal;
use crate::api::problem::{Json, Problem};
use crate::webrtc::turn::IceServer;
use crate::webrtc::{BrowserPhones, PhoneError};

/// `POST /v1/softphone`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"instance": "3f6c2a1e-8d4b-4e0a-9b7c-2d5e8f1a4c6b"}))]
pub struct SoftphoneRegistration {
    /// A random id the page made for itself when it loaded (letters,
    /// digits, `-` and `_`, 8 to 64).
    pub instance: String,
}

/// The page's registration.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SoftphoneRegistered {
    /// The agent's browser phone, for `device_id` in call requests.
    pub device_id: String,
    pub instance: String,
    /// Register again before this runs out.
    pub expires_in_secs: u64,
    /// TURN servers to give `RTCPeerConnection` (`iceServers`), with
    /// credentials valid for `media.turn_ttl_secs`; empty without TURN.
    pub ice_servers: Vec<IceServer>,
}

/// An SDP answer or offer of the page's.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 110 126\r\n…"}))]
pub struct SessionDescription {
    pub sdp: String,
}

fn phones(api: &AgentApi) -> Result<&BrowserPhones, Problem> {
    api.phones.as_ref().ok_or_else(|| Problem::not_found("webrtc_off", "this gateway has no browser phones (media.webrtc is off or sip.udp is not set)"))
}

fn valid_instance(instance: &str) -> Result<&str, Problem> {
    let ok = (8..=64).contains(&instance.len()) && instance.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(instance)
    } else {
        Err(Problem::bad_request("invalid_instance", "instance must be 8 to 64 letters, digits, '-' or '_' (e.g. crypto.randomUUID())"))
    }
}

fn phone_problem(e: PhoneError) -> Problem {
    match e {
        PhoneError::NoLeg(_) => Problem::not_found("no_leg", e.to_string()),
        PhoneError::Refused(why) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "webrtc_refused", why),
        PhoneError::Down => Problem::unavailable("webrtc_down", e.to_string()).with_retry_after(1),
        PhoneError::Store(why) => Problem::internal("registering the browser phone failed", &why),
    }
}

/// Registers (or refreshes) the page as the agent's browser phone.
#[utoipa::path(post, path = "/v1/softphone", tag = "softphone", security(("session" = [])), request_body = SoftphoneRegistration,
    responses((status = 200, body = SoftphoneRegistered), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "browser phones are off", body = Problem, content_type = "application/problem+json")))]
pub async fn register(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Json(r): Json<SoftphoneRegistration>) -> Result<Json<SoftphoneRegistered>, Problem> {
    let instance = valid_instance(&r.instance)?;
    let registered = phones(&api)?.register(&me.user_id, instance).await.map_err(phone_problem)?;
    Ok(Json(SoftphoneRegistered {
        device_id: registered.device_id,
        instance: registered.instance,
        expires_in_secs: registered.expires_in_secs,
        ice_servers: registered.ice_servers,
    }))
}

/// The page is closing: calls no longer ring in it.
#[utoipa::path(delete, path = "/v1/softphone/{instance}", tag = "softphone", security(("session" = [])), params(("instance" = String, Path, description = "the page's instance id")),
    responses((status = 204), (status = 404, description = "browser phones are off", body = Problem, content_type = "application/problem+json")))]
pub async fn unregister(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(instance): Path<String>) -> Result<StatusCode, Problem> {
    phones(&api)?.unregister(&me.user_id, valid_instance(&instance)?);
    Ok(StatusCode::NO_CONTENT)
}

/// Answers a browser leg's offer (`webrtc.offer`): the leg is answered,
/// and the call with it when it rang.
#[utoipa::path(post, path = "/v1/webrtc/legs/{id}/answer", tag = "softphone", security(("session" = [])), params(("id" = String, Path, description = "leg id")),
    request_body = SessionDescription,
    responses((status = 204), (status = 404, description = "no such leg of the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the answer is unusable, or the leg no longer rings", body = Problem, content_type = "application/problem+json")))]
pub async fn answer_leg(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(d): Json<SessionDescription>) -> Result<StatusCode, Problem> {
    phones(&api)?.answer(&me.user_id, &id, d.sdp).await.map_err(phone_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Declines a browser leg that rings: the gateway answers the call's offer
/// to this page with 603 Decline. A call for the agent goes on ringing the
/// agent's other devices, if any; a colleague's transfer fails back to the
/// colleague.
#[utoipa::path(post, path = "/v1/webrtc/legs/{id}/decline", tag = "softphone", security(("session" = [])), params(("id" = String, Path, description = "leg id")),
    responses((status = 204), (status = 404, description = "no such leg of the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the leg is answered already", body = Problem, content_type = "application/problem+json")))]
pub async fn decline_leg(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    phones(&api)?.decline(&me.user_id, &id).await.map_err(phone_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new offer of the page's on a leg (ICE restart after a network
/// change); answers the gateway's SDP.
#[utoipa::path(post, path = "/v1/webrtc/legs/{id}/offer", tag = "softphone", security(("session" = [])), params(("id" = String, Path, description = "leg id")),
    request_body = SessionDescription,
    responses((status = 200, body = SessionDescription), (status = 404, description = "no such leg of the agent's", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "the offer is unusable", body = Problem, content_type = "application/problem+json")))]
pub async fn reoffer_leg(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Path(id): Path<String>, Json(d): Json<SessionDescription>) -> Result<Json<SessionDescription>, Problem> {
    let sdp = phones(&api)?.reoffer(&me.user_id, &id, d.sdp).await.map_err(phone_problem)?;
    Ok(Json(SessionDescription { sdp }))
}
