//! Controller mode: finds nodes on the LAN and talks to them.
//!
//! Today this is discovery ([`discovery`]): probe, hear beacons, confirm each
//! node over its API. The job engine builds on it.

pub mod discovery;
pub mod frames;
pub mod scheduler;
