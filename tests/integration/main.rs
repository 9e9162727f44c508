//! Integration tests: the real server on an ephemeral port, real sockets,
//! real WebSocket and HTTP clients. Everything compiles into this one test
//! binary to keep link times down; each module is one area of behaviour.

mod common;

mod abuse;
mod assets;
mod auth;
mod bad_input;
mod binary;
mod catalog;
mod channels;
mod chat;
mod cluster;
mod cluster_recovery;
mod connection_send;
mod examples;
mod gateway;
mod heartbeat;
mod hostile;
mod inspect;
mod lifecycle;
mod limits;
mod load;
mod logs;
mod openapi;
mod origins;
mod presence;
mod publish;
mod rate_limits;
mod recovery;
mod refresh;
mod rest;
mod settings;
mod shutdown;
mod slow_consumer;
mod tenants;
mod transport;
