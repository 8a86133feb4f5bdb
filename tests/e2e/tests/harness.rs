//! The harness itself: every backend starts, does its job and stops with its
//! handle. These tests need no part of Switchboard, so when an end-to-end
//! test fails they tell whether the product or the test bed is at fault.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, PutPayload};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Connection as _;
use switchboard_e2e::ports::LOCALHOST;
use switchboard_e2e::postgres::PostgresDatabase;
use switchboard_e2e::s3::S3Server;
use switchboard_e2e::sipp::{self, Scenario, Uas};
use switchboard_e2e::kafka::Broker;
use switchboard_e2e::{eventually, TestContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gives_each_test_its_own_database() {
    let first = PostgresDatabase::create().await.unwrap();
    let second = PostgresDatabase::create().await.unwrap();
    assert_ne!(first.name(), second.name());

    let mut conn = sqlx::PgConnection::connect(first.url()).await.unwrap();
    sqlx::query("CREATE TABLE probe (n BIGINT)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO probe VALUES (42)").execute(&mut conn).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT n FROM probe").fetch_one(&mut conn).await.unwrap();
    assert_eq!(n, 42);
    conn.close().await.unwrap();

    // The other database does not see the table.
    let mut other = sqlx::PgConnection::connect(second.url()).await.unwrap();
    let missing = sqlx::query("SELECT n FROM probe").fetch_one(&mut other).await;
    assert!(missing.is_err(), "a fresh database must not hold another test's tables");
    other.close().await.unwrap();

    // Dropping the handle drops the database.
    let url = first.url().to_owned();
    drop(first);
    assert!(sqlx::PgConnection::connect(&url).await.is_err(), "the database outlived its handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_round_trips_a_keyed_record_and_stops_on_drop() {
    let ctx = TestContext::new("tansu_round_trip");
    let tansu = Broker::tansu(&ctx.subdir("tansu").unwrap()).await;
    ctx.register_log("tansu", tansu.log().unwrap().to_owned());
    tansu.create_topic("probe", 3).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    for (key, value) in [("call-a", "one"), ("call-b", "two"), ("call-a", "three")] {
        producer
            .send(FutureRecord::to("probe").key(key).payload(value), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let records = tansu.read_all("probe").await.unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    let of_a: Vec<(i32, String)> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some("call-a"))
        .map(|r| (r.partition, String::from_utf8(r.payload.clone()).unwrap()))
        .collect();
    assert_eq!(of_a.len(), 2);
    assert_eq!(of_a[0].0, of_a[1].0, "records of one key must share a partition");
    assert_eq!([of_a[0].1.as_str(), of_a[1].1.as_str()], ["one", "three"], "per-key order");
    let total: i64 = tansu.high_watermarks("probe").await.unwrap().iter().map(|(_, hw)| hw).sum();
    assert_eq!(total, 3);

    let port: SocketAddr = tansu.bootstrap().parse().unwrap();
    drop(producer);
    drop(tansu);
    assert!(TcpStream::connect(port).is_err(), "the broker still listens after its handle was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_stores_objects_and_refuses_a_wrong_secret() {
    let ctx = TestContext::new("s3s_fs");
    let s3 = S3Server::start(&ctx, "recordings").await.unwrap();
    let client = s3.client().unwrap();
    let key = ObjectPath::from("calls/probe.bin");
    client.put(&key, PutPayload::from_static(b"sound")).await.unwrap();
    assert_eq!(s3.get("calls/probe.bin").await.unwrap(), b"sound");
    assert_eq!(s3.list_keys().await.unwrap(), vec!["calls/probe.bin".to_owned()]);
    // s3s-fs keeps objects as files in the bucket's directory.
    assert!(s3.data_dir().join("recordings/calls/probe.bin").is_file());

    let forged = s3.client_with_secret("not-the-secret-key-at-all").unwrap();
    let refused_get = forged.get(&key).await;
    assert!(refused_get.is_err(), "a GET signed with a wrong secret was accepted");
    let refused_put = forged.put(&ObjectPath::from("calls/forged.bin"), PutPayload::from_static(b"x")).await;
    assert!(refused_put.is_err(), "a PUT signed with a wrong secret was accepted");
    assert!(!s3.data_dir().join("recordings/calls/forged.bin").exists());

    let endpoint = s3.endpoint();
    let addr: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    drop(s3);
    assert!(TcpStream::connect(addr).is_err(), "s3s-fs still listens after its handle was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_places_a_call_with_media_to_an_echoing_phone() {
    let ctx = TestContext::new("sipp_direct");
    let mut phone = Uas::start(&ctx, "phone").await.unwrap();
    let target = SocketAddr::from((LOCALHOST, phone.sip_port()));
    let run =
        sipp::uac(&ctx, "carrier", Scenario::Builtin("uac_pcap"), "14155550100", target, 1, Duration::from_secs(40))
            .await
            .unwrap();
    assert!(run.succeeded(), "SIPp call to SIPp failed: {:?}", run.status);
    assert!(run.messages.contains("SIP/2.0 200 OK"), "no 200 OK in the trace");
    phone.process().ensure_running().unwrap();

    let span = sipp::pcap_span(&std::path::Path::new(sipp::PCAP_DIR).join("g711a.pcap")).unwrap();
    assert!(span > Duration::from_secs(6) && span < Duration::from_secs(8), "g711a.pcap spans {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_404_scenario_passes_on_404_and_acks_in_the_invite_transaction() {
    let ctx = TestContext::new("sipp_404_positive");
    let refuser =
        Uas::start_scenario(&ctx, "refuser", Scenario::File(sipp::scenario_dir().join("uas_reply_404.xml")), false)
            .await
            .unwrap();
    let target = SocketAddr::from((LOCALHOST, refuser.sip_port()));
    let scenario = Scenario::File(sipp::scenario_dir().join("uac_expect_404.xml"));
    let run = sipp::uac(&ctx, "carrier", scenario, "14155550199", target, 1, Duration::from_secs(15)).await.unwrap();
    assert!(run.succeeded(), "the 404 scenario failed against a server answering 404: {:?}", run.status);
    // The ACK of a non-2xx answer must carry the INVITE's branch (RFC 3261
    // 17.1.1.3), or a real gateway would not match it to the transaction.
    let branches: Vec<&str> =
        run.messages.lines().filter(|l| l.starts_with("Via:")).filter_map(|l| l.split("branch=").nth(1)).collect();
    assert!(branches.len() >= 2, "no Via branches in the trace:\n{}", run.messages);
    let invite_branch = branches[0];
    let ack_branch = *branches.last().unwrap();
    assert_eq!(invite_branch, ack_branch, "ACK branch differs from the INVITE's:\n{}", run.messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_404_scenario_fails_when_the_call_is_answered() {
    // The scenario used against unknown numbers must not pass by accident:
    // against a phone that answers, it has to fail.
    let ctx = TestContext::new("sipp_404_negative");
    let phone = Uas::start(&ctx, "phone").await.unwrap();
    let target = SocketAddr::from((LOCALHOST, phone.sip_port()));
    let scenario = Scenario::File(sipp::scenario_dir().join("uac_expect_404.xml"));
    let run = sipp::uac(&ctx, "carrier", scenario, "14155550199", target, 1, Duration::from_secs(15)).await.unwrap();
    assert!(!run.succeeded(), "the 404 scenario passed against a phone that answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wait_names_what_it_waited_for() {
    let err =
        eventually("the impossible", Duration::from_millis(300), || async { Ok::<Option<()>, anyhow::Error>(None) })
            .await
            .unwrap_err();
    assert!(err.to_string().contains("the impossible"), "{err}");
}
