//! Model scopes: which model serves (and which windows train) a device.
//!
//! With `training.scope = "fleet"` one model serves every device. With
//! `"device"` each device has its own, with `"group"` each group of
//! `training.groups` (devices heard on topics matching the group's MQTT
//! filters). A scope is named `fleet`, `device:<id>` or `group:<name>`; the
//! name labels metrics and status records, and commands address it.
//!
//! Each scope keeps its models in a directory of its own under `model.dir`:
//! the fleet in `model.dir` itself (so a fleet deployment can later split),
//! a device in `devices/<escaped id>/`, a group in `groups/<name>/`. Each of
//! those directories holds a `scope` file with the scope's name, so the
//! daemon finds its scopes again after a restart whatever the escaping did.

pub mod dirs;
pub mod rules;
pub mod store;
