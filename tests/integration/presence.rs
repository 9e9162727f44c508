//! Presence: `channel.presence` joined/left when a user's first connection
//! joins a channel and its last one leaves.

use serde_json::json;

use crate::common::{Client, TestServer};

/// Asserts the next frame is a presence change of `user` to `state` in
/// `channel`.
async fn expect_presence(client: &mut Client, channel: &str, user: &str, state: &str) {
    let presence = client.recv_type("channel.presence").await;
    assert_eq!(presence["channel"], channel, "{presence}");
    assert_eq!(presence["data"], json!({"user_id": user, "state": state}), "{presence}");
    assert_eq!(presence.get("reply_to"), None, "{presence}");
    assert!(presence["id"].as_str().is_some_and(|id| !id.is_empty()));
}

/// The sorted `presence` list of a `channel.subscribed`.
fn presence_list(ack: &serde_json::Value) -> Vec<String> {
    let mut users: Vec<String> =
        ack["data"]["presence"].as_array().expect("presence list").iter().map(|u| u.as_str().unwrap().into()).collect();
    users.sort();
    users
}

#[actix_rt::test]
async fn joining_user_is_announced_and_sees_everyone() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut bob = server.connect_as("bob").await;
    let acks = bob.subscribe(&["conversation:c1"]).await;
    assert_eq!(presence_list(&acks[0]), ["alice", "bob"]);
    assert_eq!(acks[0]["data"]["presence_count"], 2);
    expect_presence(&mut alice, "conversation:c1", "bob", "joined").await;
    // The joiner is not told about itself.
    bob.assert_nothing_pending().await;
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn disconnecting_user_is_announced_as_left() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    expect_presence(&mut alice, "conversation:c1", "bob", "joined").await;
    bob.close().await;
    expect_presence(&mut alice, "conversation:c1", "bob", "left").await;
    let mut carol = server.connect_as("carol").await;
    let acks = carol.subscribe(&["conversation:c1"]).await;
    assert_eq!(presence_list(&acks[0]), ["alice", "carol"]);
}

#[actix_rt::test]
async fn dropped_connection_is_announced_as_left() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let bob = server.subscriber("bob", &["conversation:c1"]).await;
    expect_presence(&mut alice, "conversation:c1", "bob", "joined").await;
    drop(bob); // TCP goes away without a close frame
    expect_presence(&mut alice, "conversation:c1", "bob", "left").await;
}

#[actix_rt::test]
async fn unsubscribing_user_is_announced_as_left() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    let mut bob = server.subscriber("bob", &["team:t1"]).await;
    expect_presence(&mut alice, "team:t1", "bob", "joined").await;
    bob.request("channel.unsubscribe", None, json!({"channels": ["team:t1"]})).await;
    bob.recv_type("channel.unsubscribed").await;
    expect_presence(&mut alice, "team:t1", "bob", "left").await;
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn presence_is_per_channel() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    let mut bob = server.subscriber("bob", &["team:t2"]).await;
    let mut witness = server.subscriber("witness", &["team:t2"]).await;
    expect_presence(&mut bob, "team:t2", "witness", "joined").await;
    // alice is not in team:t2, so she hears nothing of it.
    alice.assert_nothing_pending().await;
    witness.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn user_with_two_tabs_joins_once_and_leaves_with_the_last_tab() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;

    let mut tab1 = server.subscriber("bob", &["conversation:c1"]).await;
    expect_presence(&mut alice, "conversation:c1", "bob", "joined").await;

    let mut tab2 = server.connect_as("bob").await;
    let acks = tab2.subscribe(&["conversation:c1"]).await;
    assert_eq!(presence_list(&acks[0]), ["alice", "bob"], "users, not connections");
    assert_eq!(acks[0]["data"]["presence_count"], 2);
    // The second tab is not a new join, for alice or for the first tab.
    alice.assert_nothing_pending().await;
    tab1.assert_nothing_pending().await;

    // The first tab leaving is not bob leaving.
    tab1.request("channel.unsubscribe", None, json!({"channels": ["conversation:c1"]})).await;
    tab1.recv_type("channel.unsubscribed").await;
    alice.assert_nothing_pending().await;
    tab2.assert_nothing_pending().await;
    drop(tab1);

    // The last one is.
    tab2.close().await;
    expect_presence(&mut alice, "conversation:c1", "bob", "left").await;
    alice.assert_nothing_pending().await;
}
