//! Many connections at once: 200 concurrent clients all receive one
//! broadcast, exactly once; 100 subscribers of one channel, spread by the
//! server over both of its workers, all receive every published event, once
//! and in order.

use futures_util::future::join_all;
use serde_json::json;

use crate::common::{Client, TestServer};

const CLIENTS: usize = 200;

#[actix_rt::test]
async fn two_hundred_clients_each_receive_a_broadcast_once() {
    let server = TestServer::start();
    let mut clients: Vec<Client> = Vec::with_capacity(CLIENTS);
    // Connect in waves of 50 concurrent handshakes.
    for wave in 0..CLIENTS / 50 {
        let server = &server;
        let connecting = (0..50).map(|i| async move { server.connect_as(&format!("user-{}", wave * 50 + i)).await });
        clients.extend(join_all(connecting).await);
    }
    let metrics = server.wait_for_connections(CLIENTS as u64).await;
    assert_eq!(metrics["users"], CLIENTS, "{metrics}");

    let (status, body) = server.post("/ws/broadcast", json!({"type": "maintenance", "data": {"in_minutes": 5}})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], CLIENTS, "{body}");
    let id = body["id"].as_str().expect("broadcast id").to_owned();

    let received = join_all(clients.iter_mut().map(|client| {
        let id = id.clone();
        async move {
            let event = client.recv_type("maintenance").await;
            assert_eq!(event["id"], id.as_str());
            assert_eq!(event["data"], json!({"in_minutes": 5}));
            assert_eq!(event.get("channel"), None);
            // Exactly once: nothing else is on its way.
            client.assert_nothing_pending().await;
        }
    }))
    .await;
    assert_eq!(received.len(), CLIENTS);

    let metrics = server.metrics().await;
    assert_eq!(metrics["connections"], CLIENTS, "{metrics}");
    assert!(metrics["messages_out"].as_u64().unwrap() >= CLIENTS as u64, "{metrics}");
}

#[actix_rt::test]
async fn a_hundred_subscribers_on_both_workers_receive_every_event_in_order() {
    const SUBSCRIBERS: usize = 100;
    const EVENTS: usize = 20;
    let server = TestServer::start();
    let mut clients: Vec<Client> = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS / 25 {
        let server = &server;
        // One user for all: presence is not what this test is about.
        let joining = (0..25).map(|_| async move {
            let mut client = server.connect().await;
            client.init(json!({"api_key": "development", "user_id": "crowd"})).await;
            client.subscribe(&["team:crowd"]).await;
            client
        });
        clients.extend(join_all(joining).await);
    }
    let mut ids = Vec::new();
    for n in 0..EVENTS {
        ids.push(server.publish("team:crowd", "tick", json!({ "n": n })).await);
    }
    join_all(clients.iter_mut().map(|client| {
        let ids = ids.clone();
        async move {
            for (n, id) in ids.iter().enumerate() {
                let event = client.recv_type("tick").await;
                assert_eq!(event["id"], id.as_str());
                assert_eq!(event["data"]["n"], n);
            }
            client.assert_nothing_pending().await;
        }
    }))
    .await;
    let metrics = server.metrics().await;
    assert_eq!(metrics["channels"], 1, "{metrics}");
    assert!(metrics["messages_out"].as_u64().unwrap() >= (SUBSCRIBERS * EVENTS) as u64, "{metrics}");
}
