//! The agent's Task sync status (`call.synced`, B4) from the connector's
//! status topic, with `events.log = "kafka"`: a carrier (SIPp) calls the
//! agent's desk phone (SIPp), the call ends, and `TaskSyncStatus` records
//! produced to the status topic, as the connector publishes them, reach the
//! agent's stream: refused with Salesforce's reason, then logged with the
//! Task id, a record that is no status in between skipped and counted.
//!
//! Runs against the Kafka-protocol broker named by `SWITCHBOARD_TEST_KAFKA`
//! (bootstrap address), else a tansu broker of its own
//! (`SWITCHBOARD_TEST_TANSU_BIN`).

mod support;

use std::time::Duration;

use serde_json::json;
use switchboard_gateway::calls::live::{AgentEventKind, AgentEvents, CallState, CallView};
use switchboard_gateway::config::EventLogKind;
use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_gateway::salesforce::sync_topic::PARTITIONS_EVERY;
use switchboard_proto::{Message as _, TaskSyncState, TaskSyncStatus};
use switchboard_test_support::kafka::{produce, Broker};
use support::{free_udp_port, Sipp, SippRun, TestGateway, CARRIER_IP};

/// Partitions of the status topic: more than one, so the gateway must read
/// them all to see a call's statuses wherever its key puts them.
const STATUS_PARTITIONS: i32 = 3;

/// A status as the connector publishes it.
fn status(call_id: &str, user_id: &str, state: TaskSyncState, task_id: &str, detail: &str) -> Vec<u8> {
    TaskSyncStatus {
        call_id: call_id.into(),
        user_id: user_id.into(),
        state: state as i32,
        task_id: task_id.into(),
        detail: detail.into(),
        note: String::new(),
        case_id: String::new(),
        updated_at_ms: switchboard_store::now_ms(),
    }
    .encode_to_vec()
}

/// The next event of `kind` on the stream, within 20 s.
async fn next_of(events: &mut AgentEvents, kind: AgentEventKind) -> CallView {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.expect("the stream stays open");
            if event.kind == kind {
                return event.call.clone().expect("a call event carries its call");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event within 20 s"))
}

/// A gateway with `events.log = "kafka"` reading `status_topic` at
/// `broker`, and its agent Ada with a desk phone and a number.
struct World {
    gw: TestGateway,
    ada: String,
    events: AgentEvents,
}

impl World {
    async fn start(broker: &Broker, suffix: &str, status_topic: &str) -> World {
        let events_topic = format!("call-events-{suffix}");
        broker.create_topic(&events_topic, 1).await;
        let (brokers, statuses) = (broker.bootstrap(), status_topic.to_owned());
        let gw = TestGateway::start(move |c| {
            c.events.log = EventLogKind::Kafka;
            c.events.kafka.brokers = brokers;
            c.events.kafka.topic = events_topic;
            c.events.kafka.status_topic = statuses;
        })
        .await;
        let directory = gw.directory();
        let ada = directory.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap().id;
        let events = gw.live().subscribe(&ada).events;
        World { gw, ada, events }
    }

    /// The carrier (SIPp) calls Ada's number, her desk phone (SIPp)
    /// answers, the call ends; its id.
    async fn ended_call(&mut self) -> String {
        let directory = self.gw.directory();
        let port = free_udp_port("127.0.0.1");
        directory.create_device(NewDevice { user_id: self.ada.clone(), name: "desk".into(), contact_uri: format!("sip:ada@127.0.0.1:{port}") }).await.unwrap();
        directory.assign_number("+15005550100", &self.ada).await.unwrap();
        let dir = self.gw.dir.path();
        let device = Sipp::spawn(dir, SippRun { label: "desk", scenario: "interop_uas_answer_wait_bye.xml", ip: "127.0.0.1", remote: None, service: None, port });
        let carrier = Sipp::spawn(
            dir,
            SippRun { label: "carrier", scenario: "interop_uac_call_wait_bye.xml", ip: CARRIER_IP, remote: Some(self.gw.sip), service: Some("15005550100"), port: free_udp_port(CARRIER_IP) },
        );
        let id = next_of(&mut self.events, AgentEventKind::Started).await.id;
        if self.gw.live().view_for(&id, &self.ada).expect("the call is live").state != CallState::Answered {
            next_of(&mut self.events, AgentEventKind::Answered).await;
        }
        self.gw.control().hang_up(&id).await.unwrap_or_else(|e| panic!("hang up: {e}"));
        next_of(&mut self.events, AgentEventKind::Ended).await;
        carrier.succeeds().await;
        device.succeeds().await;
        id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sees_its_task_status_from_the_status_topic_and_a_record_that_is_no_status_is_skipped() {
    let scratch = tempfile::tempdir().unwrap();
    let broker = Broker::real(scratch.path()).await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let status_topic = format!("task-sync-{suffix}");
    broker.create_topic(&status_topic, STATUS_PARTITIONS).await;
    let mut w = World::start(&broker, &suffix, &status_topic).await;
    let id = w.ended_call().await;
    assert_eq!(w.gw.metric("switchboard_sync_status_unreadable_total").await, 0.0);

    // The connector's statuses of Ada's Task, keyed by the call id.
    let producer = broker.producer();
    let refused = "FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject is required";
    produce(&producer, &status_topic, &id, &status(&id, &w.ada, TaskSyncState::Failed, "", refused)).await;
    let failed = next_of(&mut w.events, AgentEventKind::Synced).await.salesforce_sync.expect("the sync status");
    assert_eq!(serde_json::to_value(&failed).unwrap(), json!({"state": "failed", "detail": refused}));

    // A record that is no status, on the call's partition ahead of the next
    // status: skipped and counted, and the status after it still arrives.
    produce(&producer, &status_topic, &id, b"\x08\x96\x01 not a TaskSyncStatus \xff").await;
    produce(&producer, &status_topic, &id, &status(&id, &w.ada, TaskSyncState::Synced, "00T5g0000000001AAA", "")).await;
    let synced = next_of(&mut w.events, AgentEventKind::Synced).await.salesforce_sync.expect("the sync status");
    assert_eq!(serde_json::to_value(&synced).unwrap(), json!({"state": "synced", "task_id": "00T5g0000000001AAA"}));
    assert_eq!(w.gw.metric("switchboard_sync_status_unreadable_total").await, 1.0);
    // What a reloading softphone gets.
    assert_eq!(w.gw.live().view_for(&id, &w.ada).unwrap().salesforce_sync, Some(synced));
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_topic_created_after_the_gateway_started_is_read_from_the_gateways_start() {
    let scratch = tempfile::tempdir().unwrap();
    let broker = Broker::real(scratch.path()).await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let status_topic = format!("task-sync-{suffix}");
    // The gateway starts before the connector's status topic exists: it
    // keeps running, and calls are taken meanwhile.
    let mut w = World::start(&broker, &suffix, &status_topic).await;
    let id = w.ended_call().await;

    // The topic appears and the connector publishes at once, most likely
    // before the gateway's next look for partitions: the gateway reads each
    // partition from its own start (less the grace period), not from the end.
    broker.create_topic(&status_topic, STATUS_PARTITIONS).await;
    produce(&broker.producer(), &status_topic, &id, &status(&id, &w.ada, TaskSyncState::Skipped, "", "the user has no Salesforce user id")).await;
    // The next look comes within PARTITIONS_EVERY, well inside next_of's 20 s.
    assert!(PARTITIONS_EVERY <= Duration::from_secs(10));
    let skipped = next_of(&mut w.events, AgentEventKind::Synced).await.salesforce_sync.expect("the sync status");
    assert_eq!(serde_json::to_value(&skipped).unwrap(), json!({"state": "skipped", "detail": "the user has no Salesforce user id"}));
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_and_stops_while_the_broker_is_down() {
    // Nothing listens there.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let gw = TestGateway::start(move |c| {
        c.events.log = EventLogKind::Kafka;
        c.events.kafka.brokers = down;
    })
    .await;
    // The relay and the status reader cannot reach it; the gateway serves
    // anyway, and stops without waiting for the broker.
    assert!(gw.metrics().await.starts_with("HTTP/1.1 200"), "the gateway answers while the broker is down");
    tokio::time::timeout(Duration::from_secs(15), gw.stop()).await.expect("the gateway stops within 15 s while the broker is down");
}
