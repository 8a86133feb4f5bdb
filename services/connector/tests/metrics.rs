//! The connector's metrics as Prometheus renders them. A test binary of its
//! own, because the recorder is process-wide.

mod common;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the sample `series` (name with labels, as rendered), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test]
async fn metrics_count_events_requests_writes_and_dead_letters() {
    let handle = PrometheusBuilder::new().install_recorder().expect("recorder");
    let world = World::new().await;
    world.write_raw("0193f0a2-cccc-7000-8000-000000000001", 1, b"\xff\xff").await;
    let call = "0193f0a2-cccc-7000-8000-000000000002";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    world.write_outbox(&call_events("0193f0a2-cccc-7000-8000-000000000003", "u-nobody", "")[..4]).await;
    let last = last + 4;

    // One batch: full when both calls have ended, at the last row.
    let mut config = world.outbox_config();
    if let Some(sf) = config.salesforce.as_mut() {
        sf.batch_max_tasks = 2;
        sf.batch_deadline_ms = 20_000;
        sf.batch_update_deadline_ms = 20_000;
    }
    let mut running = Running::start(config, &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let text = handle.render();
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(r#"switchboard_connector_events_total{kind="unknown",outcome="undecodable"}"#, 1.0);
    expect(r#"switchboard_connector_events_total{kind="call.started",outcome="applied"}"#, 2.0);
    expect(r#"switchboard_connector_events_total{kind="call.ended",outcome="applied"}"#, 2.0);
    expect(r#"switchboard_connector_dead_letters_total{reason="undecodable"}"#, 1.0);
    expect(r#"switchboard_connector_salesforce_requests_total{operation="token",status="200"}"#, 1.0);
    expect(r#"switchboard_connector_salesforce_requests_total{operation="upsert_tasks",status="200"}"#, 1.0);
    expect(r#"switchboard_connector_task_writes_total{outcome="created"}"#, 1.0);
    expect("switchboard_connector_calls_logged_total", 1.0);
    expect("switchboard_connector_batches_total", 1.0);
    expect("switchboard_connector_batch_tasks_count", 1.0);
    expect("switchboard_connector_batch_tasks_sum", 1.0);
    expect("switchboard_connector_salesforce_pacing_seconds", 0.0);
    expect(r#"switchboard_connector_tasks_skipped_total{reason="agent_not_linked"}"#, 1.0);
    expect(r#"switchboard_connector_preflight_total{result="ready"}"#, 1.0);
    expect(r#"switchboard_connector_salesforce_requests_total{operation="describe",status="200"}"#, 2.0);
    let usage = sample(&text, "switchboard_connector_salesforce_api_usage").expect("api usage gauge");
    assert_eq!(usage, world.emulator.stats().api_usage as f64);
    assert_eq!(sample(&text, "switchboard_connector_salesforce_api_limit"), Some(15_000.0));
    assert!(text.contains("# HELP switchboard_connector_dead_letters_total"), "{text}");
}
