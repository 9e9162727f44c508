//! Slow consumers: a client that stops reading runs into its outbound budget
//! and is dropped (close 4008, or its socket shut after the grace period),
//! while other subscribers of the same channel receive everything.

use serde_json::{json, Value};

use crate::common::{assert_connection_error, Client, Ended, TestServer};

const CHANNEL: &str = "conversation:bulk";
/// Events per published batch: 10 × ~4 KB stays well under the 64 KiB budget
/// of the healthy subscriber, which reads each batch before the next.
const PER_BATCH: usize = 10;
/// Loopback socket buffers can hold several MB; this caps the test at
/// about 80 MB published.
const MAX_BATCHES: usize = 2000;

/// A server whose clients get a 64 KiB outbound budget (and so events of at
/// most 32 KiB: a budget holds at least two).
fn server(grace_ms: u64) -> TestServer {
    TestServer::with(|a| {
        a.max_outbound_bytes = Some(64 * 1024);
        a.max_frame_bytes = Some(32 * 1024);
        a.slow_consumer_grace_ms = Some(grace_ms);
    })
}

/// An authenticated subscriber of [`CHANNEL`] with a tiny receive buffer,
/// which from now on the test does not read.
async fn slow_subscriber(server: &TestServer) -> Client {
    let mut slow = server.connect_with_recv_buffer(4096).await;
    slow.init(json!({"api_key": "development", "user_id": "slow"})).await;
    slow.subscribe(&[CHANNEL]).await;
    slow
}

/// The next frame for `client` that is not the slow client's `left`: once
/// the slow client is closed (its close frame written when the kernel has
/// room for it), its leaving may be announced at any point.
async fn recv_skipping_slow(client: &mut Client) -> Value {
    loop {
        let event = client.recv().await;
        if !(event["type"] == "channel.presence" && event["data"]["user_id"] == "slow") {
            return event;
        }
    }
}

/// Publishes batches of ~4 KB events to [`CHANNEL`] until the server reports
/// a slow consumer. After each batch `healthy` (if any) must receive exactly
/// that batch, in order. Returns the ids of every event published.
async fn publish_until_dropped(server: &TestServer, mut healthy: Option<&mut Client>) -> Vec<String> {
    let pad = "x".repeat(4000);
    let mut published: Vec<String> = Vec::new();
    for _ in 0..MAX_BATCHES {
        let events: Vec<Value> = (0..PER_BATCH)
            .map(|i| json!({"channel": CHANNEL, "type": "bulk", "data": {"seq": published.len() + i, "pad": pad}}))
            .collect();
        let (status, body) = server.post("/api/publish/batch", json!({"events": events})).await;
        assert_eq!(status, 202, "{body}");
        let ids: Vec<String> = body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), PER_BATCH);
        if let Some(healthy) = healthy.as_deref_mut() {
            for (i, id) in ids.iter().enumerate() {
                let event = recv_skipping_slow(healthy).await;
                assert_eq!(event["type"], "bulk", "unexpected frame: {event}");
                assert_eq!(event["id"], id.as_str(), "the healthy subscriber missed or reordered an event");
                assert_eq!(event["data"]["seq"], published.len() + i);
            }
        }
        published.extend(ids);
        let metrics = server.metrics().await;
        let dropped = metrics["dropped_slow_consumers"].as_u64().expect("dropped_slow_consumers");
        if dropped > 0 {
            assert_eq!(dropped, 1, "only the slow client may be dropped: {metrics}");
            return published;
        }
    }
    panic!("no slow consumer after {} events of 4 KB", MAX_BATCHES * PER_BATCH);
}

#[actix_rt::test]
async fn slow_consumer_is_closed_with_4008_while_others_receive_everything() {
    let server = server(30_000);
    let mut healthy = server.subscriber("healthy", &[CHANNEL]).await;
    let mut slow = slow_subscriber(&server).await;
    assert_eq!(healthy.recv_type("channel.presence").await["data"]["user_id"], "slow");

    let published = publish_until_dropped(&server, Some(&mut healthy)).await;

    // The healthy subscriber keeps receiving after the drop.
    let after = server.publish(CHANNEL, "bulk", json!({"seq": published.len()})).await;
    let event = recv_skipping_slow(&mut healthy).await;
    assert_eq!((event["type"].clone(), event["id"].clone()), (json!("bulk"), json!(after)), "{event}");
    let heartbeat = healthy.request("connection.heartbeat", None, json!({})).await;
    let reply = recv_skipping_slow(&mut healthy).await;
    assert_eq!(reply["reply_to"], heartbeat.as_str(), "nothing else was on its way: {reply}");
    let metrics = server.metrics().await;
    assert_eq!(metrics["dropped_slow_consumers"], 1, "{metrics}");
    // What the server holds for the slow client stays within its budget
    // while it is still connected (it is gone once its close frame could be
    // written).
    let (_, list) = server.get("/ws/connections").await;
    let slow_entry = list["connections"].as_array().unwrap().iter().find(|c| c["user_id"] == "slow").cloned();
    if let Some(slow_entry) = slow_entry {
        let pending = slow_entry["pending_bytes"].as_u64().expect("pending_bytes");
        assert!(pending <= 64 * 1024, "{pending} bytes queued for a client with a 64 KiB budget");
    }

    // The slow client, reading at last, gets an in-order prefix of the events
    // and then the 4008 close, announced by a `connection.error` right before
    // it, past the events the server never queued (the grace period is long,
    // so the server is still waiting for it to read the close frame).
    let (frames, ended) = slow.drain().await;
    assert_eq!(ended, Ended::Closed(4008), "after {} frames", frames.len());
    let notice = frames.last().expect("frames before the close");
    assert_connection_error(notice, 4008);
    assert_eq!(frames.iter().filter(|f| f["type"] == "connection.error").count(), 1, "one connection.error");
    let ids: Vec<&str> = frames.iter().filter(|f| f["type"] == "bulk").map(|f| f["id"].as_str().unwrap()).collect();
    assert!(ids.len() < published.len(), "the slow client cannot have received everything");
    let prefix: Vec<&str> = published[..ids.len()].iter().map(String::as_str).collect();
    assert_eq!(ids, prefix, "a slow client gets events in order, without gaps, until it is dropped");

    // It is gone from the registry; the healthy one remains.
    server.wait_for_connections(1).await;
    let (_, list) = server.get("/ws/connections").await;
    assert_eq!(list["connections"][0]["user_id"], "healthy", "{list}");
}

#[actix_rt::test]
async fn slow_consumer_that_never_reads_is_cut_off_after_the_grace_period() {
    let server = server(200);
    let mut healthy = server.subscriber("healthy", &[CHANNEL]).await;
    let mut slow = slow_subscriber(&server).await;
    assert_eq!(healthy.recv_type("channel.presence").await["data"]["user_id"], "slow");

    publish_until_dropped(&server, Some(&mut healthy)).await;

    // The slow client never reads again: the server must shut its socket
    // itself, and then forget the connection.
    server.wait_for_connections(1).await;
    let left = healthy.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "slow", "state": "left"}));
    let ended = slow.ended_raw().await;
    assert!(matches!(ended, Ended::Dropped | Ended::Closed(4008)), "{ended:?}");
}
