//! Integration tests: the real server on an ephemeral port, real sockets,
//! real WebSocket and HTTP clients. Everything compiles into this one test
//! binary to keep link times down; each module is one area of behaviour.

mod common;

mod auth;
