//! The integration tests, one crate linked once: a module per area, with
//! the helpers they share in [`common`].
//!
//! Run one area with `cargo test --test it <module>::`, e.g.
//! `cargo test --test it mqtt::online::`.

mod common;

mod activity;
mod bench;
mod cli;
mod control;
mod daemon;
mod docs;
mod evidence;
mod export;
mod external;
mod fuzz;
mod mqtt;
mod ops;
mod profiles;
mod reads;
mod replay;
mod scores;
mod serial;
mod status;
mod status_control;
mod variants;
