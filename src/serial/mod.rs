//! Serial-port input pieces that need no port: the framers that cut a byte
//! stream into payloads ([`framing`]) and the sample-rate check
//! ([`rate`]). Both are pure; `source::serial` does the I/O. [`sim`] is a
//! simulated device on a pseudo-terminal, for trying it without hardware.

pub mod framing;
pub mod rate;
pub mod sim;
