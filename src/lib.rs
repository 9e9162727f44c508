//! nova-realtime: the real-time event server of the Nova AI-agent
//! application.
//!
//! Browsers hold one WebSocket each; backend services publish through the
//! admin REST API. The server authenticates connections, routes typed events
//! through channels to every subscriber, tracks presence and keeps slow
//! clients from costing memory.
//!
//! # Layout
//!
//! - `actors/` (the `nova-actors` crate): the session, channel and registry
//!   actors and the wire protocol. It knows nothing of HTTP routes.
//! - [`config`]: every setting declared once (flag, environment, YAML key),
//!   development and production modes.
//! - [`admission`]: the budget of connections that are not clients yet, and
//!   the HTTP request clock.
//! - [`server`]: builds a node on a bound listener; graceful drain.
//! - [`transport`]: meets every new connection; serves WebSocket sessions
//!   directly on the socket and hands everything else to actix-web.
//! - [`http`]: the REST API by resource, and the WebSocket fallback route.
//! - [`logging`]: env_logger, with client-caused actix-http errors demoted.
//! - [`origins`]: which browser origins may connect.
//! - [`peer`]: the client's address, through trusted proxies.
//! - `src/main.rs`: parses the configuration, binds, runs until a signal.
//!
//! docs/protocol.md is the wire contract; README.md says how to run it.

#![warn(missing_docs)]

pub mod admission;
pub mod config;
pub mod http;
pub mod logging;
pub mod origins;
pub mod peer;
pub mod server;
pub mod transport;
