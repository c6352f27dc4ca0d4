//! The API's JSON bodies. `RenderRequest::from_json` is what the node's
//! `POST /api/v1/renders` handler runs on a body: the JSON, then the frame
//! and override checks. The bodies a controller reads from a node (node
//! info, render status and changes, errors) are plain serde reads, fuzzed
//! here too. Whatever the bytes: no panic; a request the node accepts is in
//! range and comes back the same from its own JSON.

#![no_main]

use herd::wire::{
    ErrorBody, FRAME_RANGE, NodeInfo, RenderChanges, RenderCreated, RenderRequest, RenderStatus,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RenderRequest::from_json(data) {
        Ok(request) => {
            assert!(FRAME_RANGE.contains(&request.frame));
            assert!(request.overrides.validate().is_ok());
            let json = serde_json::to_vec(&request).expect("a request serializes");
            let again = RenderRequest::from_json(&json).expect("its own JSON is accepted");
            assert_eq!(again.blob, request.blob);
            assert_eq!(again.frame, request.frame);
            assert_eq!(again.overrides, request.overrides);
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
        }
    }
    let _ = serde_json::from_slice::<NodeInfo>(data);
    let _ = serde_json::from_slice::<RenderStatus>(data);
    let _ = serde_json::from_slice::<RenderChanges>(data);
    let _ = serde_json::from_slice::<RenderCreated>(data);
    let _ = serde_json::from_slice::<ErrorBody>(data);
});
