//! Routing a new call: who rings, through which trunk, and which caller ID
//! the other side sees.
//!
//! - From a trunk: the dialled number's owner — a user, or every member of a
//!   group — rings on every device and registered contact at once.
//! - From a device (authenticated): an extension or one of the company's own
//!   numbers is an internal call to that user or group; anything else leaves
//!   through the outbound trunk as E.164, presenting a number the caller is
//!   entitled to (F5) in From and P-Asserted-Identity, anonymised when the
//!   phone asks for `Privacy: id`.
//!
//! Every plan also says whether an administrator's auto-recording policy
//! (F7) covers the call, so the call is recorded for admins only: a call to a
//! number or group with a policy (inbound or internal), and an outbound call
//! presenting a number with a policy (or a number of a group with one) as
//! its caller ID. A policy covers a line in both directions, the way the far
//! end sees the line; an agent's own extension is never covered.
//!
//! Every agent a plan names carries that user's privacy mode (F2) as it is
//! when the call is routed, read once per decision for all the users
//! involved ([`Directory::privacy_mode_users`]): the connector logs its Task
//! without the number and the recording links.
//!
//! The lookups talk to the directory and the registrations; the choices are
//! pure functions below, unit tested.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use switchboard_proto::v1 as pb;
use tracing::warn;

use super::b2bua::{Presentation, Target};
use super::trunks::{Trunk, Trunks};
use super::writer::AgentInfo;
use crate::directory::{Directory, NumberRoute, User};
use crate::media::ports::{PortAllocator, PortPair};
use crate::registrations::Registrations;
use crate::sip::headers::{NameAddr, SipUri};
use crate::sip::{Destination, SipMessage};

/// Where a new call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A configured trunk (by name), trusted by source address.
    Trunk(String),
    /// A device (by id) that authenticated with digest credentials.
    Device(String),
}

/// What the caller's INVITE says about the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerInfo {
    /// User part of From.
    pub user: String,
    pub display: String,
    /// `Privacy: id` (or `user`/`header`) asked for.
    pub private: bool,
}

impl CallerInfo {
    pub fn from_invite(invite: &SipMessage) -> CallerInfo {
        let from = invite.header("From").and_then(NameAddr::parse);
        let private = invite
            .header_values("Privacy")
            .iter()
            .flat_map(|v| v.split(';'))
            .any(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "id" | "user" | "header"));
        CallerInfo {
            user: from.as_ref().and_then(|f| f.user()).unwrap_or_else(|| "anonymous".into()),
            display: from.and_then(|f| f.display).unwrap_or_default(),
            private,
        }
    }
}

/// What `call.started` records.
#[derive(Debug, Clone)]
pub struct Started {
    pub direction: pb::Direction,
    /// The agent the call is logged for until someone answers.
    pub owner: AgentInfo,
    pub from_number: String,
    pub from_display: String,
    pub to_number: String,
    /// The user placing an internal call, who takes part in it too (an
    /// outbound call's caller is its owner; an inbound one has none).
    pub caller_user_id: Option<String>,
}

/// One place the call rings.
#[derive(Debug, Clone)]
pub struct PlannedFork {
    /// The agent who takes the call if this fork answers (`None` for a
    /// trunk: the caller stays the agent).
    pub agent: Option<AgentInfo>,
    pub target: Target,
}

/// The routing decision.
pub enum RouteOutcome {
    /// Answer the caller with `code`; nothing is logged.
    Refused { code: u16, why: String },
    /// The callee exists but nothing of theirs can ring, and it has no
    /// mailbox (a group): logged, then 480. A user's call goes to its
    /// voicemail instead (a plan without forks).
    Unreachable { started: Started },
    Ready(Box<Plan>),
}

/// Everything needed to place the call.
pub struct Plan {
    /// The user whose voicemail takes the call if nobody answers: the
    /// callee of a call for one user (not a group, not out to a trunk).
    pub mailbox: Option<String>,
    pub started: Started,
    pub presentation: Presentation,
    pub forks: Vec<PlannedFork>,
    pub a: PortPair,
    pub b: PortPair,
    /// An admin policy wants the whole call recorded, admin-only: the
    /// dialled number or group has one (inbound, internal), or the caller
    /// ID presented has one (outbound). See [`NumberRoute::admin_recording`]
    /// and [`Directory::admin_recording_for_number`].
    pub admin_recording: bool,
}

/// What routing needs.
#[derive(Clone)]
pub struct Router {
    pub directory: Directory,
    pub registrations: Registrations,
    pub trunks: Trunks,
    pub ports: PortAllocator,
}

impl Router {
    pub async fn route(&self, origin: &Origin, dialled: &str, caller: &CallerInfo, now_unix: u64) -> RouteOutcome {
        match origin {
            Origin::Trunk(_) => self.inbound(dialled, caller, now_unix).await,
            Origin::Device(device) => self.placed_by_device(device, dialled, caller, now_unix).await,
        }
    }

    async fn inbound(&self, dialled: &str, caller: &CallerInfo, now_unix: u64) -> RouteOutcome {
        let route = match self.directory.route_number(&unescape(dialled)).await {
            Ok(Some(r)) => r,
            Ok(None) => return RouteOutcome::Refused { code: 404, why: format!("no user or group owns {dialled}") },
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        let presentation = Presentation {
            user: caller.user.clone(),
            display: (!caller.display.is_empty()).then(|| caller.display.clone()),
            private: caller.private,
            ..Presentation::default()
        };
        let started = Started {
            direction: pb::Direction::Inbound,
            owner: agent(&route.members[0].user, None, false),
            from_number: caller.user.clone(),
            from_display: caller.display.clone(),
            to_number: route.number.clone(),
            caller_user_id: None,
        };
        self.ring(route, started, presentation, None, now_unix).await
    }

    async fn placed_by_device(&self, device: &str, dialled: &str, caller: &CallerInfo, now_unix: u64) -> RouteOutcome {
        let user = match self.directory.device_owner(device).await {
            Ok(Some(u)) => u,
            Ok(None) => return RouteOutcome::Refused { code: 403, why: format!("device {device} belongs to no user") },
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        let dialled = unescape(dialled);
        // Internal first: an extension, then one of the company's numbers.
        let internal = match self.directory.route_extension(&dialled).await {
            Ok(Some(r)) => Some(r),
            Ok(None) => match self.directory.route_number(&dialled).await {
                Ok(r) => r,
                Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
            },
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        let entitled = match self.directory.entitled_numbers(&user.id).await {
            Ok(n) => n,
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        if let Some(route) = internal {
            let from = user.extension.clone().or_else(|| entitled.first().cloned()).unwrap_or_else(|| user.name.clone());
            let presentation = Presentation { user: from.clone(), display: Some(user.name.clone()), ..Presentation::default() };
            let started = Started {
                direction: pb::Direction::Internal,
                owner: agent(&route.members[0].user, None, false),
                from_number: from,
                from_display: user.name.clone(),
                to_number: route.number.clone(),
                caller_user_id: Some(user.id.clone()),
            };
            return self.ring(route, started, presentation, Some(device), now_unix).await;
        }
        self.outbound(&user, device, &dialled, caller, &entitled).await
    }

    async fn outbound(&self, user: &User, device: &str, dialled: &str, caller: &CallerInfo, entitled: &[String]) -> RouteOutcome {
        let Some(trunk) = self.trunks.outbound() else {
            return RouteOutcome::Refused { code: 404, why: "no trunk with an address is configured for outbound calls".into() };
        };
        let Some(number) = trunk.normalise(dialled) else {
            return RouteOutcome::Refused { code: 484, why: format!("{dialled} is neither an extension nor a phone number") };
        };
        let requested = trunk.normalise(&caller.user);
        let Some(caller_id) = choose_caller_id(requested.as_deref(), entitled) else {
            return RouteOutcome::Refused {
                code: 403,
                why: format!("user {} has no number to present; assign them a number or make a main line", user.id),
            };
        };
        let Some(dest) = resolve_trunk(trunk).await else {
            return RouteOutcome::Refused { code: 503, why: format!("trunk {} does not resolve", trunk.name()) };
        };
        let Some(target) = trunk.target(&number, dest.addr()) else {
            return RouteOutcome::Refused { code: 503, why: format!("trunk {} has no address", trunk.name()) };
        };
        // The line the far end sees is the caller ID: its policy applies.
        let admin_recording = match self.directory.admin_recording_for_number(&caller_id).await {
            Ok(r) => r,
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        let private = match self.directory.privacy_mode_users(&[user.id.as_str()]).await {
            Ok(p) => p.contains(&user.id),
            Err(e) => return RouteOutcome::Refused { code: 503, why: format!("directory lookup failed: {e}") },
        };
        let domain = trunk.from_domain();
        let presentation = Presentation {
            user: caller_id.clone(),
            display: Some(user.name.clone()),
            host: Some(domain.clone()),
            asserted: Some(format!("<sip:{caller_id}@{domain}>")),
            private: caller.private,
        };
        let started = Started {
            direction: pb::Direction::Outbound,
            owner: agent(user, Some(device.to_owned()), private),
            from_number: caller_id,
            from_display: user.name.clone(),
            to_number: number,
            caller_user_id: None,
        };
        let (a, b) = match self.media().await {
            Ok(p) => p,
            Err(why) => return RouteOutcome::Refused { code: 503, why },
        };
        let forks = vec![PlannedFork { agent: None, target }];
        RouteOutcome::Ready(Box::new(Plan { mailbox: None, started, presentation, forks, a, b, admin_recording }))
    }

    /// Every device of every member rings: each live registration (a device
    /// may register several contacts) at the address the REGISTER came from
    /// (NAT), addressed to its Contact; a device without one at its
    /// provisioned contact. The calling device itself is left out. The
    /// plan is admin-recorded when the route is.
    async fn ring(&self, route: NumberRoute, mut started: Started, presentation: Presentation, skip: Option<&str>, now_unix: u64) -> RouteOutcome {
        let private = match self.private_members(&route.members).await {
            Ok(p) => p,
            Err(why) => return RouteOutcome::Refused { code: 503, why },
        };
        // The owner is one of the members (the first).
        started.owner.privacy_mode = private.contains(&started.owner.user_id);
        let forks = self.forks_of(&route.members, &private, skip, now_unix).await;
        let mailbox = match (&route.group, route.members.as_slice()) {
            (None, [member]) => Some(member.user.id.clone()),
            _ => None,
        };
        if forks.is_empty() && mailbox.is_none() {
            return RouteOutcome::Unreachable { started };
        }
        match self.media().await {
            Ok((a, b)) => {
                let admin_recording = route.admin_recording;
                RouteOutcome::Ready(Box::new(Plan { mailbox, started, presentation, forks, a, b, admin_recording }))
            }
            Err(why) => RouteOutcome::Refused { code: 503, why },
        }
    }

    /// Which of `members` have privacy mode on, by user id (one query).
    async fn private_members(&self, members: &[crate::directory::Member]) -> Result<BTreeSet<String>, String> {
        let ids: Vec<&str> = members.iter().map(|m| m.user.id.as_str()).collect();
        self.directory.privacy_mode_users(&ids).await.map_err(|e| format!("the directory could not be read ({e}); try again"))
    }

    /// A fork for every live registration of every device of `members`
    /// (at the address the REGISTER came from), or the device's provisioned
    /// contact when it has none; the device `skip` is left out. `private`
    /// holds the members with privacy mode on.
    async fn forks_of(&self, members: &[crate::directory::Member], private: &BTreeSet<String>, skip: Option<&str>, now_unix: u64) -> Vec<PlannedFork> {
        let mut forks = Vec::new();
        for member in members {
            for device in member.devices.iter().filter(|d| Some(d.id.as_str()) != skip) {
                let who = agent(&member.user, Some(device.id.clone()), private.contains(&member.user.id));
                match self.registrations.bindings(&device.id, now_unix).await {
                    Ok(bindings) if !bindings.is_empty() => {
                        for b in bindings {
                            forks.push(PlannedFork { agent: Some(who.clone()), target: Target::new(b.contact, b.source) });
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(device = %device.id, error = %e, "reading registrations failed; using the provisioned contact"),
                }
                if device.contact_uri.is_empty() {
                    continue; // registers only, and is not registered now
                }
                match resolve_contact(&device.contact_uri).await {
                    Some(dest) => {
                        let mut target = Target::new(device.contact_uri.clone(), dest);
                        target.server_name = tls_name(&device.contact_uri, dest);
                        forks.push(PlannedFork { agent: Some(who), target });
                    }
                    None => warn!(device = %device.id, contact = %device.contact_uri, "device contact cannot be resolved; skipped"),
                }
            }
        }
        forks
    }

    async fn media(&self) -> Result<(PortPair, PortPair), String> {
        match (self.ports.allocate().await, self.ports.allocate().await) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
    }
}

/// Why the agent's devices cannot be rung for a call it places or answers
/// from the softphone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentDeviceError {
    #[error("device {0} is not one of yours")]
    NotFound(String),
    #[error("{0}")]
    NoDevice(String),
    #[error("the directory could not be read ({0}); try again")]
    Lookup(String),
}

impl Router {
    /// The agent's devices that ring for a call it places (click-to-dial)
    /// or answers from the softphone, each asked to answer by itself
    /// ([`Target::auto_answer`]): the named device (its registrations, else
    /// its provisioned contact), else every device with a live
    /// registration. `first_only` keeps only the first of them (answering
    /// a call rings one device).
    pub async fn agent_devices(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        first_only: bool,
        host: &str,
        now_unix: u64,
    ) -> Result<Vec<PlannedFork>, AgentDeviceError> {
        let lookup = |e: crate::directory::DirectoryError| AgentDeviceError::Lookup(e.to_string());
        let user = self.directory.get_user(user_id).await.map_err(lookup)?;
        let devices = self.directory.list_devices(Some(user_id)).await.map_err(lookup)?;
        let private = self.directory.privacy_mode_users(&[user_id]).await.map_err(lookup)?;
        let mut forks = Vec::new();
        match device_id {
            Some(wanted) => {
                let Some(device) = devices.into_iter().find(|d| d.id == wanted) else { return Err(AgentDeviceError::NotFound(wanted.to_owned())) };
                forks = self.forks_of(&[crate::directory::Member { user, devices: vec![device] }], &private, None, now_unix).await;
            }
            None => {
                for device in devices {
                    let who = agent(&user, Some(device.id.clone()), private.contains(&user.id));
                    match self.registrations.bindings(&device.id, now_unix).await {
                        Ok(bindings) => forks.extend(bindings.into_iter().map(|b| PlannedFork { agent: Some(who.clone()), target: Target::new(b.contact, b.source) })),
                        Err(e) => warn!(device = %device.id, error = %e, "reading registrations failed; the device is not rung"),
                    }
                }
            }
        }
        if first_only {
            forks.truncate(1);
        }
        if forks.is_empty() {
            let why = match device_id {
                Some(d) => format!("device {d} is not registered and has no fixed address; sign in on it first"),
                None => "none of your devices is registered; sign in on a phone first, or name a device with device_id".to_owned(),
            };
            return Err(AgentDeviceError::NoDevice(why));
        }
        Ok(forks.into_iter().map(|f| PlannedFork { agent: f.agent, target: f.target.auto_answer(host) }).collect())
    }

    /// Routes the far end of a call the agent places from the softphone,
    /// exactly as if `device` (the agent's) had dialled `dialled` with
    /// `caller_id` in From: an extension or company number rings
    /// internally, anything else leaves through the trunk.
    pub async fn originate(&self, device: &str, dialled: &str, caller_id: Option<&str>, now_unix: u64) -> RouteOutcome {
        let caller = CallerInfo { user: caller_id.unwrap_or_default().to_owned(), display: String::new(), private: false };
        self.placed_by_device(device, dialled, &caller, now_unix).await
    }
}

/// Where the agent's side of an answered call goes (F8 transfer, F16
/// move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    /// The agent's own devices (every one, or `device_id` alone), except
    /// `except`, the one the call is on.
    Devices { user_id: String, device_id: Option<String>, except: Option<String> },
    /// Every device of a user, as a call to that user rings.
    User(String),
    /// An extension or company number (a user or a group, rung as a call to
    /// it would be), or an outside number through the outbound trunk.
    Number(String),
}

/// Who rings for a transfer, and as whom.
pub struct TransferPlan {
    pub forks: Vec<PlannedFork>,
    pub presentation: Presentation,
}

/// The parties of the call being transferred, as its new party is told.
#[derive(Debug, Clone)]
pub struct TransferredCall {
    /// The outside party's number and name (the caller of an inbound call,
    /// the callee of an outbound one).
    pub customer_number: String,
    pub customer_display: String,
    /// The company's number on the call (the dialled number inbound, the
    /// caller ID outbound): what an outside target is shown, when it is one
    /// of the company's numbers (an internal call has an extension there).
    pub company_number: String,
    /// The agent handing the call over: otherwise its default caller ID is
    /// what an outside target is shown.
    pub agent_user_id: Option<String>,
}

impl Router {
    /// The forks of a transfer or move, or why there are none (a sentence
    /// for the agent).
    pub async fn transfer(&self, to: &TransferTo, call: &TransferredCall, now_unix: u64) -> Result<TransferPlan, String> {
        let internal = Presentation {
            user: call.customer_number.clone(),
            display: (!call.customer_display.is_empty()).then(|| call.customer_display.clone()),
            ..Presentation::default()
        };
        let lookup = |e: crate::directory::DirectoryError| format!("the directory could not be read ({e}); try again");
        match to {
            TransferTo::Devices { user_id, device_id, except } => {
                let user = self.directory.get_user(user_id).await.map_err(lookup)?;
                let devices = self.directory.list_devices(Some(user_id)).await.map_err(lookup)?;
                // The browser phone is every open softphone page of the
                // user: a call on one page may move to another (a reloaded
                // page takes its call back), so it is never "already there".
                let here = |d: &crate::directory::Device| except.as_ref() == Some(&d.id) && !d.is_browser_phone();
                if let Some(wanted) = device_id {
                    let Some(device) = devices.iter().find(|d| &d.id == wanted) else {
                        return Err(format!("device {wanted} is not one of yours"));
                    };
                    if here(device) {
                        return Err(format!("the call is already on device {wanted}"));
                    }
                }
                let devices = devices.into_iter().filter(|d| device_id.as_ref().is_none_or(|w| &d.id == w) && !here(d)).collect();
                let member = crate::directory::Member { user, devices };
                let members = std::slice::from_ref(&member);
                let private = self.private_members(members).await?;
                let forks = self.forks_of(members, &private, None, now_unix).await;
                if forks.is_empty() {
                    return Err("none of your other devices is registered or reachable; sign in on the other phone first".into());
                }
                Ok(TransferPlan { forks, presentation: internal })
            }
            TransferTo::User(user_id) => {
                let user = self.directory.get_user(user_id).await.map_err(|e| match e {
                    crate::directory::DirectoryError::NotFound { .. } => format!("there is no user {user_id}"),
                    e => lookup(e),
                })?;
                let devices = self.directory.list_devices(Some(user_id)).await.map_err(lookup)?;
                let name = user.name.clone();
                let members = [crate::directory::Member { user, devices }];
                let private = self.private_members(&members).await?;
                let forks = self.forks_of(&members, &private, None, now_unix).await;
                if forks.is_empty() {
                    return Err(format!("{name} has no device that can ring now"));
                }
                Ok(TransferPlan { forks, presentation: internal })
            }
            TransferTo::Number(number) => {
                let dialled = unescape(number);
                let route = match self.directory.route_extension(&dialled).await.map_err(lookup)? {
                    Some(r) => Some(r),
                    None => self.directory.route_number(&dialled).await.map_err(lookup)?,
                };
                if let Some(route) = route {
                    let private = self.private_members(&route.members).await?;
                    let forks = self.forks_of(&route.members, &private, None, now_unix).await;
                    if forks.is_empty() {
                        return Err(format!("nobody at {dialled} has a device that can ring now"));
                    }
                    return Ok(TransferPlan { forks, presentation: internal });
                }
                let Some(trunk) = self.trunks.outbound() else {
                    return Err(format!("{dialled} is no extension or company number, and no trunk is configured for outside calls"));
                };
                let Some(e164) = trunk.normalise(&dialled) else {
                    return Err(format!("{dialled} is neither an extension nor a phone number"));
                };
                let dest = resolve_trunk(trunk).await.ok_or_else(|| format!("trunk {} does not resolve; check sip.trunks", trunk.name()))?;
                let target = trunk.target(&e164, dest.addr()).ok_or_else(|| format!("trunk {} has no address", trunk.name()))?;
                // The outside party is shown a number of the company's (F5).
                let presented = match self.directory.route_number(&call.company_number).await.map_err(lookup)? {
                    Some(_) => call.company_number.clone(),
                    None => {
                        let default = match &call.agent_user_id {
                            Some(user) => self.directory.default_caller_id(user).await.map_err(lookup)?,
                            None => None,
                        };
                        default.ok_or_else(|| "you have no number to present to an outside party; an admin can assign you one".to_owned())?
                    }
                };
                let domain = trunk.from_domain();
                let presentation = Presentation {
                    user: presented.clone(),
                    display: None,
                    host: Some(domain.clone()),
                    asserted: Some(format!("<sip:{presented}@{domain}>")),
                    private: false,
                };
                Ok(TransferPlan { forks: vec![PlannedFork { agent: None, target }], presentation })
            }
        }
    }
}

/// The dialled user part with %-escapes decoded (`%2B1415…` is `+1415…`).
fn unescape(dialled: &str) -> String {
    String::from_utf8_lossy(&crate::sip::headers::unescape(dialled)).into_owned()
}

/// The number an outbound call presents: the one the phone asked for if
/// the caller is entitled to it, their first entitled number otherwise.
pub fn choose_caller_id(requested: Option<&str>, entitled: &[String]) -> Option<String> {
    match requested {
        Some(r) if entitled.iter().any(|n| n == r) => Some(r.to_owned()),
        _ => entitled.first().cloned(),
    }
}

fn agent(user: &User, device_id: Option<String>, privacy_mode: bool) -> AgentInfo {
    AgentInfo {
        user_id: user.id.clone(),
        salesforce_user_id: user.salesforce_user_id.clone(),
        device_id,
        display_name: user.name.clone(),
        privacy_mode,
    }
}

/// The transport address of a trunk's next hop (outbound proxy or address).
pub async fn resolve_trunk(trunk: &Trunk) -> Option<Destination> {
    let (host, port) = trunk.next_hop()?;
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port)).await.ok()?.next()?,
    };
    Some(trunk.destination(addr))
}

/// The DNS name a TLS destination must present a certificate for; `None`
/// for other transports and for IP literals (verified by IP address).
fn tls_name(uri: &str, dest: Destination) -> Option<String> {
    let Destination::Tls(_) = dest else { return None };
    let host = SipUri::parse(uri)?.host;
    host.parse::<IpAddr>().is_err().then_some(host).filter(|h| !h.starts_with('['))
}

/// The transport address of a device contact URI (IP literal or DNS name).
pub async fn resolve_contact(contact: &str) -> Option<Destination> {
    let uri = SipUri::parse(contact)?;
    let host = uri.host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let secure = uri.scheme.eq_ignore_ascii_case("sips");
    let port = uri.port.unwrap_or(if secure { 5061 } else { 5060 });
    let addr: SocketAddr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port)).await.ok()?.next()?,
    };
    Some(match uri.transport().as_str() {
        _ if secure => Destination::Tls(addr),
        "TLS" => Destination::Tls(addr),
        "TCP" => Destination::Tcp(addr),
        _ => Destination::Udp(addr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entitled_request_is_honoured_anything_else_falls_back_to_the_first() {
        let entitled = vec!["+14155550100".to_owned(), "+14155550199".to_owned()];
        assert_eq!(choose_caller_id(Some("+14155550199"), &entitled).as_deref(), Some("+14155550199"));
        assert_eq!(choose_caller_id(Some("+12025550123"), &entitled).as_deref(), Some("+14155550100"), "not theirs");
        assert_eq!(choose_caller_id(None, &entitled).as_deref(), Some("+14155550100"));
        assert_eq!(choose_caller_id(Some("+14155550100"), &[]), None, "nothing to present");
    }

    #[test]
    fn tls_contacts_named_by_dns_are_verified_by_name() {
        let tls = Destination::Tls("192.0.2.1:5061".parse().unwrap());
        assert_eq!(tls_name("sips:ada@phone.example.com", tls).as_deref(), Some("phone.example.com"));
        assert_eq!(tls_name("sips:ada@192.0.2.1", tls), None);
        assert_eq!(tls_name("sip:ada@phone.example.com", Destination::Udp("192.0.2.1:5060".parse().unwrap())), None);
    }

    #[test]
    fn caller_info_reads_from_and_privacy() {
        let mut inv = SipMessage::request("INVITE", "sip:+442071234567@gw");
        inv.push_header("From", "\"Ada\" <sip:+14155550100@gw>;tag=a").push_header("Privacy", "id;critical");
        let c = CallerInfo::from_invite(&inv);
        assert_eq!(c, CallerInfo { user: "+14155550100".into(), display: "Ada".into(), private: true });
        inv.set_header("Privacy", "none");
        assert!(!CallerInfo::from_invite(&inv).private);
    }
}
