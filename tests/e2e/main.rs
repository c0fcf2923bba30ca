//! End-to-end tests: the real `puente` binary on a free loopback port, driven through the
//! generated client (`puente-client`). One integration test target for the facade crate.

mod api;
mod architecture;
mod benchmark;
mod cli;
mod crash;
mod dashboard;
mod deploy;
mod docs;
mod first_run;
mod fx;
mod ha;
mod hardening;
mod ops;
mod reconcile;
mod security;
mod settlement;
mod support;
mod tenancy;
mod wire;
