//! A job's manifest and where files land in a job's folder. A node runs
//! `Manifest::from_json` on a blob a controller uploaded before laying files
//! out on its disk; a controller turns absolute paths into places with
//! `deps::job_key`. Whatever the bytes: no panic, and every place either
//! accepts is a safe relative path that cannot climb out of the folder.

#![no_main]

use std::path::Path;

use herd::controller::deps::job_key;
use herd::wire::{Manifest, is_safe_job_path};
use libfuzzer_sys::fuzz_target;

/// No `..`, no root, no empty part: the path stays inside its folder.
fn stays_inside(path: &str) -> bool {
    is_safe_job_path(path)
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != ".." && part != ".")
        && !path.contains('\\')
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(data) {
        assert!(stays_inside(&manifest.blend_path));
        for file in &manifest.files {
            assert!(stays_inside(&file.path));
        }
        let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
        assert_eq!(Manifest::from_json(&json).expect("its own JSON is accepted"), manifest);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(key) = job_key(Path::new(text))
    {
        assert!(stays_inside(&key), "{text:?} placed at {key:?}");
    }
});
