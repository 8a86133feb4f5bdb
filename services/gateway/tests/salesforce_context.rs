//! Salesforce context of a real call (F10, F11, F14, F15), against the
//! Salesforce emulator with private sharing: the agent signs in with
//! "Connect with Salesforce", a carrier (SIPp) calls the agent's number,
//! and the caller's records arrive on the agent's stream while the device
//! (SIPp) rings and answers. Searches go out with the agent's own token,
//! so records Salesforce hides from the agent are never shown, and an
//! expired token is refreshed on the way. What the agent decides is a call
//! event.

mod support;

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use salesforce_emulator::{Browser, Emulator, EmulatorConfig, TestCredentials};
use serde_json::{json, Value};
use switchboard_gateway::calls::live::{AgentEventKind, AgentEvents, CallView};
use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_proto::Kind;
use support::{free_udp_port, Sipp, SippRun, TestGateway, CARRIER_IP};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const LIGHTNING: &str = "https://acme.lightning.force.com";

struct World {
    gw: TestGateway,
    emulator: Emulator,
    http: reqwest::Client,
    base: String,
}

impl World {
    async fn start() -> World {
        let credentials = TestCredentials::generate().unwrap();
        let emulator = Emulator::start(EmulatorConfig::new(credentials.certificate_pem.clone()), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let public_url = format!("http://127.0.0.1:{port}");
        emulator.add_callback_url(&emulator.consumer_key(), &format!("{public_url}/v1/auth/salesforce/callback")).unwrap();
        let (login_url, client_id, secret, org) = (emulator.url(), emulator.consumer_key(), emulator.consumer_secret(), emulator.org_id());
        let gw = TestGateway::start(move |c| {
            c.auth.token_key = Some(KEY.into());
            c.auth.allowed_origins = vec![LIGHTNING.into()];
            c.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
            c.http.public_url = Some(public_url);
            c.auth.salesforce = Some(switchboard_gateway::config::AgentLoginConfig {
                login_url,
                client_id,
                client_secret: Some(secret),
                organization_id: Some(org),
            });
        })
        .await;
        let base = format!("http://{}", gw.http);
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        World { gw, emulator, http, base }
    }

    /// "Connect with Salesforce" as the browser does it; the session token.
    async fn sign_in(&self, username: &str) -> String {
        self.emulator.set_browser(Browser { username: Some(username.to_owned()), deny: false }).unwrap();
        let follow = |r: &reqwest::Response| r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let r = self.http.get(format!("{}/v1/auth/salesforce/login", self.base)).query(&[("return_to", format!("{LIGHTNING}/softphone"))]).send().await.unwrap();
        let r = self.http.get(follow(&r)).send().await.unwrap();
        let r = self.http.get(follow(&r)).send().await.unwrap();
        let landed = follow(&r);
        let fragment = landed.split_once('#').map(|(_, f)| f.to_owned()).unwrap_or_default();
        url::form_urlencoded::parse(fragment.as_bytes()).find(|(k, _)| k == "session").map(|(_, v)| v.into_owned()).unwrap_or_else(|| panic!("signed in: {landed}"))
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }
}

/// A desk phone (SIPp, provisioned at a free port, which it answers
/// from) and the number +1 500 555 0100 for `user_id`; answers the port.
async fn desk_with_number(w: &World, user_id: &str) -> u16 {
    let directory = w.gw.directory();
    let port = free_udp_port("127.0.0.1");
    directory.create_device(NewDevice { user_id: user_id.into(), name: "desk".into(), contact_uri: format!("sip:ada@127.0.0.1:{port}") }).await.unwrap();
    directory.assign_number("+15005550100", user_id).await.unwrap();
    port
}

/// The carrier (SIPp, calling from +1 500 555 0006) calls the number; the
/// desk phone at `port` answers; both wait for the gateway's BYE.
fn carrier_calls_desk(w: &World, port: u16) -> (Sipp, Sipp) {
    let dir = w.gw.dir.path();
    let device = Sipp::spawn(dir, SippRun { label: "desk", scenario: "interop_uas_answer_wait_bye.xml", ip: "127.0.0.1", remote: None, service: None, port });
    let carrier = Sipp::spawn(
        dir,
        SippRun { label: "carrier", scenario: "interop_uac_call_wait_bye.xml", ip: CARRIER_IP, remote: Some(w.gw.sip), service: Some("15005550100"), port: free_udp_port(CARRIER_IP) },
    );
    (device, carrier)
}

/// The next event of `kind` on the stream, if one comes within 20 s.
async fn within_20s(events: &mut AgentEvents, kind: AgentEventKind) -> Option<CallView> {
    let next = async {
        loop {
            let event = events.recv().await.expect("the stream stays open");
            if event.kind == kind {
                return event.call.clone().expect("a call event carries its call");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), next).await.ok()
}

/// The next event of `kind` on the stream, within 20 s.
async fn next_of(events: &mut AgentEvents, kind: AgentEventKind) -> CallView {
    within_20s(events, kind).await.unwrap_or_else(|| panic!("no {kind:?} event within 20 s"))
}

/// Waits until the call is answered (its event may have gone by already);
/// if it is not, fails with what the carrier and the device saw.
async fn answered(w: &World, events: &mut AgentEvents, call_id: &str, user_id: &str, [a, b]: [&Sipp; 2]) {
    let state = w.gw.live().view_for(call_id, user_id).expect("the call is live").state;
    if state != switchboard_gateway::calls::live::CallState::Answered && within_20s(events, AgentEventKind::Answered).await.is_none() {
        panic!("the call {call_id} was not answered within 20 s\n{}\n{}", a.report(), b.report());
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap_or_else(|| panic!("a list: {list}")).iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_matched_while_it_rings_and_the_agent_relates_and_assigns_the_call_with_what_salesforce_shows_it() {
    let w = World::start().await;
    let sf = &w.emulator;
    let ada_sf = sf.add_user("ada@acme.example").unwrap();
    let bob_sf = sf.add_user("bob@acme.example").unwrap();
    // Contacts and Cases are private: each agent reads its own only.
    sf.set_sharing("Contact", true);
    sf.set_sharing("Case", true);
    // The carrier presents +1 500 555 0006; the org typed it in four ways.
    let acme = sf.insert("Account", json!({"Name": "Acme Corp", "Phone": "(500) 555-0006"})).unwrap();
    let grace = sf.insert("Contact", json!({"FirstName": "Grace", "LastName": "Hopper", "Phone": "500-555-0006", "AccountId": acme, "OwnerId": ada_sf})).unwrap();
    let hidden = sf.insert("Contact", json!({"FirstName": "Hidden", "LastName": "Person", "MobilePhone": "+1 500 555 0006", "OwnerId": bob_sf})).unwrap();
    let alan = sf.insert("Lead", json!({"FirstName": "Alan", "LastName": "Turing", "Company": "Bletchley", "Phone": "15005550006"})).unwrap();
    sf.insert("Contact", json!({"LastName": "Elsewhere", "Phone": "212 555 0199", "OwnerId": ada_sf})).unwrap();
    let ada_case = sf.insert("Case", json!({"Subject": "Invoice missing", "ContactId": grace, "OwnerId": ada_sf})).unwrap();
    let bob_case = sf.insert("Case", json!({"Subject": "Invoice dispute", "OwnerId": bob_sf})).unwrap();
    let renewal = sf.insert("Opportunity", json!({"Name": "Acme renewal", "StageName": "Prospecting", "CloseDate": "2027-01-31", "AccountId": acme})).unwrap();

    let directory = w.gw.directory();
    let ada = directory
        .create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), salesforce_user_id: Some(ada_sf.clone()), ..Default::default() })
        .await
        .unwrap();
    let device_port = desk_with_number(&w, &ada.id).await;
    let carol = directory.create_user(NewUser { name: "Carol".into(), ..Default::default() }).await.unwrap();
    let sessions = switchboard_gateway::api::auth::Sessions::new(
        w.gw.db.clone(),
        switchboard_gateway::api::auth::seal::Sealer::from_base64(KEY).unwrap(),
        Duration::from_secs(3600),
    );
    let (carol_token, _) = sessions.create(&carol.id, None).await.unwrap();

    let token = w.sign_in("ada@acme.example").await;
    let mut events = w.gw.live().subscribe(&ada.id).events;
    let (device, carrier) = carrier_calls_desk(&w, device_port);

    // While it rings: who the caller is, as Ada may see it.
    let matched = next_of(&mut events, AgentEventKind::Matched).await;
    let id = matched.id.clone();
    let m = matched.caller_matches.expect("matches on the event");
    assert_eq!(m.number, "+15005550006");
    assert_eq!(serde_json::to_value(m.status).unwrap(), "found");
    let found: Vec<_> = m.matches.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(found, [grace.as_str(), alan.as_str(), acme.as_str()], "Contacts, Leads, Accounts; never Bob's private Contact");
    assert_eq!(m.matches[0].name, "Grace Hopper");
    assert_eq!(m.matches[0].phone.as_deref(), Some("500-555-0006"));
    assert_eq!(m.matches[1].company.as_deref(), Some("Bletchley"));

    // The same from the API; asking again is served from the cache.
    let (status, view) = w.call(Method::GET, &format!("/v1/calls/{id}"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(ids(&view["caller_matches"]["matches"]), [grace.clone(), alan.clone(), acme.clone()]);
    let calls_before = sf.api_calls();
    let (status, again) = w.call(Method::GET, &format!("/v1/calls/{id}/matches"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, view["caller_matches"]);
    assert_eq!(sf.api_calls(), calls_before, "a repeated lookup is not sent to Salesforce again");

    // F15: the agent says who it is; a record it may not see is not found.
    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/related"), &token, Some(json!({"record_id": hidden}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("record_not_found")), "{body}");
    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/related"), &token, Some(json!({"record_id": ada_case}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_record")), "{body}");
    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/related"), &token, Some(json!({"record_id": grace}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"record_id": grace, "object": "Contact", "name": "Grace Hopper"}));
    let related = next_of(&mut events, AgentEventKind::Related).await;
    assert_eq!(related.related.expect("related on the stream").record_id, grace);
    assert!(related.caller_matches.is_some(), "Ada's events keep carrying her matches");

    // F10/F11: Cases and Opportunities Ada may see.
    let (status, body) = w.call(Method::GET, "/v1/salesforce/cases?q=invoice", &token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body["records"]), vec![ada_case.clone()], "Bob's private Case is not found");
    assert_eq!(body["records"][0]["subject"], "Invoice missing");
    let (_, body) = w.call(Method::GET, &format!("/v1/salesforce/cases?contact_id={grace}"), &token, None).await;
    assert_eq!(ids(&body["records"]), vec![ada_case.clone()]);
    for bad in ["/v1/salesforce/cases?q=a", "/v1/salesforce/cases", "/v1/salesforce/cases?contact_id=003'%20OR%20Name!='"] {
        let (status, body) = w.call(Method::GET, bad, &token, None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_search")), "{bad}: {body}");
    }
    // An expired Salesforce token is refreshed once, unnoticed by the agent.
    sf.expire_tokens();
    let refreshes = sf.token_calls();
    let (status, body) = w.call(Method::GET, &format!("/v1/salesforce/opportunities?account_id={acme}"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body["records"]), vec![renewal.clone()]);
    assert_eq!(body["records"][0]["status"], "Prospecting");
    assert_eq!(sf.token_calls(), refreshes + 1, "one refresh");

    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/assignment"), &token, Some(json!({"case_id": bob_case}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("record_not_found")), "{body}");
    let (status, body) =
        w.call(Method::PUT, &format!("/v1/calls/{id}/assignment"), &token, Some(json!({"case_id": ada_case, "opportunity_id": renewal}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_assignment")), "{body}");
    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/assignment"), &token, Some(json!({"case_id": ada_case}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["record_id"], ada_case.as_str());
    let case_number = sf.records("Case").into_iter().find(|c| c["Id"] == ada_case.as_str()).unwrap()["CaseNumber"].clone();
    assert_eq!(body["name"], case_number);
    assert_eq!(next_of(&mut events, AgentEventKind::Assigned).await.assignment.unwrap().record_id.as_deref(), Some(ada_case.as_str()));

    // Carol sees none of it: not the call, and no Salesforce without connecting.
    let (status, body) = w.call(Method::GET, &format!("/v1/calls/{id}/matches"), &carol_token, None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")), "{body}");
    let (status, body) = w.call(Method::GET, "/v1/salesforce/cases?q=invoice", &carol_token, None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("salesforce_not_connected")), "{body}");
    let (status, body) = w.call(Method::PUT, &format!("/v1/calls/{id}/related"), &carol_token, Some(json!({"record_id": grace}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")), "{body}");

    answered(&w, &mut events, &id, &ada.id, [&carrier, &device]).await;
    // Hang up, then wrap up: a new Case asked for after the call.
    let (status, body) = w.call(Method::POST, &format!("/v1/calls/{id}/hangup"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    next_of(&mut events, AgentEventKind::Ended).await;
    let (status, body) = w
        .call(Method::PUT, &format!("/v1/calls/{id}/assignment"), &token, Some(json!({"new_case": {"subject": "Re-send March invoice", "description": "to accounts@acme.example"}})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["record_id"], Value::Null);
    carrier.succeeds().await;
    device.succeeds().await;

    let events = w.gw.events_once("call.assigned", 2).await;
    let related: Vec<_> = events.iter().filter_map(|(_, e)| match &e.kind { Some(Kind::Related(r)) => Some(r.clone()), _ => None }).collect();
    assert_eq!(related.len(), 1);
    assert_eq!((related[0].record_id.as_str(), related[0].object_type.as_str(), related[0].user_id.as_str()), (grace.as_str(), "Contact", ada.id.as_str()));
    let assigned: Vec<_> = events.iter().filter_map(|(_, e)| match &e.kind { Some(Kind::Assigned(a)) => Some(a.clone()), _ => None }).collect();
    assert_eq!(assigned.len(), 2);
    assert_eq!((assigned[0].object_type.as_str(), assigned[0].record_id.as_str()), ("Case", ada_case.as_str()));
    assert_eq!((assigned[1].object_type.as_str(), assigned[1].record_id.as_str(), assigned[1].subject.as_str()), ("Case", "", "Re-send March invoice"));
    assert_ne!(assigned[0].assignment_id, assigned[1].assignment_id);
    assert!(w.gw.metric("switchboard_caller_matches_total{status=\"found\"}").await >= 1.0);

    w.gw.stop().await;
    w.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_has_not_connected_salesforce_is_told_so_on_the_ringing_call() {
    let w = World::start().await;
    let directory = w.gw.directory();
    let ada = directory.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let device_port = desk_with_number(&w, &ada.id).await;
    let mut events = w.gw.live().subscribe(&ada.id).events;
    let (device, carrier) = carrier_calls_desk(&w, device_port);
    let matched = next_of(&mut events, AgentEventKind::Matched).await;
    let m = matched.caller_matches.expect("matches on the event");
    assert_eq!(serde_json::to_value(m.status).unwrap(), "not_connected");
    assert!(m.matches.is_empty());
    assert_eq!(w.emulator.api_calls(), 0, "nothing was asked of Salesforce");
    answered(&w, &mut events, &matched.id, &ada.id, [&carrier, &device]).await;
    w.gw.control().hang_up(&matched.id).await.unwrap_or_else(|e| panic!("hang up: {e}"));
    carrier.succeeds().await;
    device.succeeds().await;
    w.gw.stop().await;
    w.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sees_its_task_logged_in_salesforce_after_the_call() {
    use switchboard_connector::fold::TaskSync;
    use switchboard_connector::store::SyncStore;

    let w = World::start().await;
    let directory = w.gw.directory();
    let ada = directory.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let device_port = desk_with_number(&w, &ada.id).await;
    let mut events = w.gw.live().subscribe(&ada.id).events;
    let (device, carrier) = carrier_calls_desk(&w, device_port);
    let id = next_of(&mut events, AgentEventKind::Started).await.id;
    answered(&w, &mut events, &id, &ada.id, [&carrier, &device]).await;
    w.gw.control().hang_up(&id).await.unwrap_or_else(|e| panic!("hang up: {e}"));
    next_of(&mut events, AgentEventKind::Ended).await;
    carrier.succeeds().await;
    device.succeeds().await;

    // The connector's store, as the connector writes it: first refused, then logged.
    let store = SyncStore::new(w.gw.db.clone());
    let refused: TaskSync = serde_json::from_value(json!({
        "created": false, "salesforce_id": null, "last_written": null, "skipped": null, "writes": 0,
        "rejected": {
            "fields": {"Subject": "Inbound call from +15005550006", "Type": "Call", "CallDurationInSeconds": 1, "CallDisposition": "answered",
                       "CallObject": id, "Status": "Completed", "ActivityDate": "2026-11-26", "OwnerId": "005000000000001AAA", "Description": ""},
            "error_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "message": "Subject is required"
        }
    }))
    .unwrap();
    store.save_task(&id, &ada.id, &refused, false).await.unwrap();
    let failed = next_of(&mut events, AgentEventKind::Synced).await.salesforce_sync.expect("the sync status");
    assert_eq!(serde_json::to_value(&failed).unwrap()["state"], "failed");
    assert!(failed.detail.as_deref().is_some_and(|d| d.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION")), "{failed:?}");
    let logged = TaskSync { created: true, salesforce_id: Some("00T5g0000000001AAA".into()), writes: 1, ..Default::default() };
    store.save_task(&id, &ada.id, &logged, true).await.unwrap();
    let synced = next_of(&mut events, AgentEventKind::Synced).await.salesforce_sync.expect("the sync status");
    assert_eq!(serde_json::to_value(&synced).unwrap(), json!({"state": "synced", "task_id": "00T5g0000000001AAA"}));
    // What a reloading softphone gets.
    assert_eq!(w.gw.live().view_for(&id, &ada.id).unwrap().salesforce_sync, Some(synced));
    w.gw.stop().await;
    w.emulator.shutdown().await;
}
