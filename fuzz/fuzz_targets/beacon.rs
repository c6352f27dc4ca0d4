//! Received discovery datagrams: `Datagram::parse`, the function the node's
//! beacon task and the controller's discovery call on every UDP datagram.
//! Whatever the bytes: no panic, and what parses comes back the same from
//! its own bytes.

#![no_main]

use herd::wire::{Datagram, MAX_DATAGRAM_BYTES, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(datagram) = Datagram::parse(data) else {
        return;
    };
    assert!(data.len() <= MAX_DATAGRAM_BYTES);
    let version = match &datagram {
        Datagram::Beacon(beacon) => beacon.herd,
        Datagram::Probe(probe) => probe.herd,
    };
    assert_eq!(version, PROTOCOL_VERSION);
    let bytes = datagram.to_bytes();
    // Escapes can make the rewritten datagram longer than the one read.
    if bytes.len() <= MAX_DATAGRAM_BYTES {
        assert_eq!(Datagram::parse(&bytes).as_ref(), Some(&datagram));
    }
});
