//! Graceful shutdown through [`nova_realtime::server::Control::shutdown`]:
//! every client is told to reconnect elsewhere with close 1012.

use crate::common::{TestServer, DEADLINE};

#[actix_rt::test]
async fn shutdown_closes_every_client_with_1012() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut alice_tab2 = server.connect_as("alice").await;
    let mut bob = server.subscriber("bob", &["team:t1"]).await;
    let control = server.control();
    let shutdown = actix_rt::spawn(async move { control.shutdown().await });

    for client in [&mut alice, &mut alice_tab2, &mut bob] {
        let notice = client.expect_closed_with(1012).await;
        assert_eq!(notice["data"]["reconnect"], true, "{notice}");
    }
    tokio::time::timeout(DEADLINE, shutdown).await.expect("shutdown finishes in time").expect("shutdown task");
    // The server no longer accepts connections.
    let refused = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(server.addr)).await;
    assert!(matches!(refused, Ok(Err(_))), "the listener is still accepting after shutdown");
}

#[actix_rt::test]
async fn shutdown_closes_unauthenticated_sockets_with_1012_too() {
    let server = TestServer::with(|a| a.auth_timeout_ms = Some(60_000));
    let mut anonymous = server.connect().await;
    let mut alice = server.connect_as("alice").await;
    let control = server.control();
    let shutdown = actix_rt::spawn(async move { control.shutdown().await });
    alice.expect_closed_with(1012).await;
    // A socket that has not authenticated yet is a client too.
    anonymous.expect_closed_with(1012).await;
    tokio::time::timeout(DEADLINE, shutdown).await.expect("shutdown finishes in time").expect("shutdown task");
}
