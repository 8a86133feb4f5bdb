//! The connector's Kafka source: records in a consumer group, Tasks in the
//! Salesforce emulator, undecodable records on the dead-letter topic, each
//! Task's sync status on the status topic, offsets committed so a restart
//! resumes after the last handled record.
//!
//! Runs against the broker named by `SWITCHBOARD_TEST_KAFKA` (bootstrap
//! address) when set, else against a tansu broker of its own when
//! `SWITCHBOARD_TEST_TANSU_BIN` names one (as `scripts/test` does), else
//! against librdkafka's in-process mock cluster.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use switchboard_connector::dead_letter::{HEADER_LABEL, HEADER_ORIGIN, HEADER_REASON};
use switchboard_connector::{ConnectorConfig, KafkaConsumerConfig, SourceConfig};
use switchboard_proto::{Message as _, TaskSyncState, TaskSyncStatus};
use switchboard_test_support::kafka::{produce, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_become_tasks_bad_ones_are_dead_lettered_and_offsets_survive_a_restart() {
    let world = World::new().await;
    let broker = Broker::any(world.dir.path()).await;
    let bootstrap = broker.bootstrap();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("call-events-{suffix}");
    let dead_letter_topic = format!("call-events-dead-letters-{suffix}");
    broker.create_topic(&topic, 1).await;
    broker.create_topic(&dead_letter_topic, 1).await;
    let status_topic = format!("task-sync-{suffix}");
    broker.create_topic(&status_topic, 1).await;

    let producer = broker.producer();
    let first = "0193f0a2-aaaa-7000-8000-000000000001";
    produce_events(&producer, &topic, &call_events(first, "u-ann", &world.agent_sf_id)).await;
    produce(&producer, &topic, "0193f0a2-aaaa-7000-8000-0000000000ff", b"\x08\x96\x01 not a CallEvent \xff").await;

    let mut kafka = KafkaConsumerConfig::new(&bootstrap, &topic, &dead_letter_topic);
    kafka.group_id = format!("connector-{suffix}");
    kafka.status_topic = status_topic.clone();
    kafka.properties.extend(broker.consumer_properties());
    let config = ConnectorConfig {
        salesforce: Some(world.salesforce()),
        source: SourceConfig::Kafka(kafka),
        poll_interval_ms: 200,
    };

    let mut running = Running::start(config.clone(), &world.db).await;
    let progress = running.until_records(6).await;
    running.stop().await;
    assert_eq!(progress.dead_letters, 1);
    let tasks = tasks_for(&world.emulator, first, "u-ann");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["CallDurationInSeconds"], 125);
    assert!(tasks[0]["Description"].as_str().unwrap().contains("recordings/"));

    // The undecodable record is on the dead-letter topic, with its reason.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("dead-letter-reader-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("dead-letter reader");
    reader.subscribe(&[dead_letter_topic.as_str()]).unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("a dead letter arrives")
        .expect("dead letter");
    assert_eq!(letter.key(), Some("0193f0a2-aaaa-7000-8000-0000000000ff".as_bytes()));
    assert_eq!(letter.payload(), Some(&b"\x08\x96\x01 not a CallEvent \xff"[..]));
    let headers = letter.headers().expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("header {name} missing"))
    };
    assert!(header(HEADER_REASON).starts_with("undecodable CallEvent"), "{}", header(HEADER_REASON));
    assert_eq!(header(HEADER_LABEL), "undecodable");
    assert_eq!(header(HEADER_ORIGIN), format!("{topic}/0@5"));

    // The Task's status is on the status topic for the gateway: synced,
    // with the Task's id, keyed by the call.
    let statuses: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("status-reader-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("status reader");
    statuses.subscribe(&[status_topic.as_str()]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(60), statuses.recv())
        .await
        .expect("a status arrives")
        .expect("status");
    assert_eq!(record.key(), Some(first.as_bytes()));
    let status = TaskSyncStatus::decode(record.payload().expect("payload")).expect("a TaskSyncStatus");
    assert_eq!((status.call_id.as_str(), status.user_id.as_str()), (first, "u-ann"));
    assert_eq!(status.state(), TaskSyncState::Synced);
    assert_eq!(status.task_id, tasks[0]["Id"].as_str().unwrap());
    assert!(status.updated_at_ms > 0);

    // A restart resumes after the committed offsets: only the new call's
    // records are handled.
    let api_calls = world.emulator.api_calls();
    let second = "0193f0a2-aaaa-7000-8000-000000000002";
    let mut events = call_events(second, "u-ann", &world.agent_sf_id);
    events.truncate(4);
    produce_events(&producer, &topic, &events).await;
    let mut running = Running::start(config, &world.db).await;
    let progress = running.until_records(4).await;
    running.stop().await;
    assert_eq!(progress.records, 4, "records before the committed offset were not read again");
    assert_eq!(progress.dead_letters, 0);
    assert_eq!(tasks_for(&world.emulator, second, "u-ann").len(), 1);
    assert_eq!(world.emulator.api_calls(), api_calls + PREFLIGHT_API_CALLS + 1, "the preflight, then one write for the new call");
    assert_eq!(world.emulator.tasks().len(), 2);
}
