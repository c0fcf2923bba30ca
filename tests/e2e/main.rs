//! End-to-end tests: the real `puente` binary on a free loopback port, driven through the
//! generated client (`puente-client`). One integration test target for the facade crate.

mod api;
mod crash;
mod dashboard;
mod deploy;
mod fx;
mod ops;
mod reconcile;
mod security;
mod settlement;
mod support;
