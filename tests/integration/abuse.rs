//! Hostile clients: frames that lie about their size, floods, clients that
//! stop reading, oversized or forged requests. Each must cost the server a
//! bounded amount and leave everyone else served.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{assert_connection_error, frame_header, masked_frame, RawClient, TestServer, DEADLINE};

#[actix_rt::test]
async fn a_frame_declaring_a_gigabyte_is_refused_at_its_header() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut witness = server.subscriber("witness", &["team:t"]).await;
    let mut liar = RawClient::authenticated(server.addr, "liar").await;
    // The header claims 1 GiB; only 2 KiB follow. The server must not wait
    // for (or buffer) the rest before refusing it.
    let mut bytes = frame_header(0x1, 1 << 30, [1, 2, 3, 4]);
    bytes.extend(std::iter::repeat_n(b'x', 2048));
    liar.send(&bytes).await;
    assert_connection_error(&liar.next_text().await.expect("a connection.error"), 1009);
    assert_eq!(liar.close_code().await, Some(1009));
    let id = server.publish("team:t", "note", json!({})).await;
    assert_eq!(witness.recv_type("note").await["id"], id.as_str());
}

#[actix_rt::test]
async fn a_flood_of_control_frames_is_paced_then_closed_and_everyone_else_is_served() {
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(10);
        a.message_burst = Some(10);
    });
    let mut witness = server.subscriber("witness", &["team:t"]).await;
    let mut flooder = RawClient::authenticated(server.addr, "flooder").await;
    // 100,000 pings: 10 get a pong, the rest cost a token check each, until
    // the flood passes 10 times the limit and the connection is closed.
    let ping = masked_frame(0x9, b"flood");
    let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 100_000).collect();
    let writer = actix_rt::spawn(async move {
        // The server may close before it has read everything.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut flooder.tcp, &flood).await;
        flooder
    });
    let id = server.publish("team:t", "note", json!({})).await;
    assert_eq!(witness.recv_type("note").await["id"], id.as_str());
    let mut flooder = tokio::time::timeout(DEADLINE, writer).await.expect("the flood ends in time").expect("writer");
    assert_connection_error(&flooder.next_text().await.expect("a connection.error"), 1008);
    assert_eq!(flooder.close_code().await, Some(1008));
}

#[actix_rt::test]
async fn a_client_that_stops_reading_its_replies_is_dropped_after_two_heartbeats() {
    let server = TestServer::with(|a| {
        a.heartbeat_interval_ms = Some(100);
        a.messages_per_second = Some(1_000_000);
        a.message_burst = Some(1_000_000);
    });
    let mut stuck = server.connect_with_recv_buffer(4096).await;
    stuck.init(json!({"api_key": "development", "user_id": "stuck"})).await;
    // Ask for far more replies than the socket buffers hold, never read
    // them: the server's writes stall. A session cannot run its heartbeat
    // while its output is blocked, so the stall itself must end it.
    let request = r#"{"id":"x","type":"connection.heartbeat"}"#;
    for _ in 0..100_000 {
        let sent = tokio::time::timeout(Duration::from_secs(2), stuck.try_send_message(Message::text(request))).await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    server.wait_for_metrics("the stuck client to be dropped", |m| m["sockets"] == 0).await;
    let mut after = server.subscriber("after", &["team:t"]).await;
    let id = server.publish("team:t", "note", json!({})).await;
    assert_eq!(after.recv_type("note").await["id"], id.as_str());
}

#[actix_rt::test]
async fn a_subscribe_costs_a_token_per_channel() {
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(1);
        a.message_burst = Some(5);
    });
    let mut alice = server.connect_as("alice").await;
    let names: Vec<String> = (0..8).map(|i| format!("team:t{i}")).collect();
    let id = alice.request("channel.subscribe", None, json!({ "channels": names })).await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["data"]["code"], 4004, "{refused}");
    assert_eq!(refused["reply_to"], id.as_str());
    let (_, list) = server.get("/ws/connections").await;
    assert_eq!(list["connections"][0]["channels"], json!([]), "nothing was subscribed: {list}");
}

#[actix_rt::test]
async fn typing_cannot_carry_a_forged_message_id() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    bob.recv_type("channel.presence").await;
    alice
        .request("chat.typing", Some("conversation:c1"), json!({"message_id": "forged", "sender_id": "mallory"}))
        .await;
    let typing = bob.recv_type("chat.typing").await;
    assert_eq!(typing["data"]["sender_id"], "alice");
    assert!(typing["data"].get("message_id").is_none(), "{typing}");
}

#[actix_rt::test]
async fn a_chat_message_that_outgrows_the_frame_limit_is_refused() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.connect_as("alice").await;
    // Fits as sent; over the limit once the server adds its fields.
    let content = "x".repeat(4096 - 120);
    let id = alice.request("chat.message", Some("conversation:c1"), json!({ "content": content })).await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["data"]["code"], 4005, "{refused}");
    assert_eq!(refused["reply_to"], id.as_str());
    bob.assert_nothing_pending().await;
}
