//! The sinks that publish what the pipeline produces ([`crate::record`]).
//! A sink receives the outputs of one inference batch at a time and flushes
//! after each, so a reader sees every window as soon as it is scored.

pub mod config;
pub mod console;
pub mod jsonl;
pub mod live;
pub mod mqtt;

use crate::record::Output;

pub trait Sink: Send {
    /// Bounded name for metrics and logs.
    fn name(&self) -> &'static str;
    fn write(&mut self, output: &Output) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}
