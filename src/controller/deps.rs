//! A scene's external files: textures, image sequences, UDIM tiles,
//! libraries (chains included), sounds, fonts, volumes, caches. Blender lists
//! them (`assets/inspect.py`); here they are checked on disk and given their
//! place in a job's folder on the nodes.
//!
//! The place is the file's absolute path on the controller without its root
//! ([`job_key`]): `/home/ann/shot/tex/wood.png` goes to
//! `JOB/home/ann/shot/tex/wood.png` and the .blend likewise, so every
//! `//`-relative path (in the scene and in its libraries) resolves on the
//! node as it did on the artist's machine, and the node rewrites only the
//! absolute ones (see `assets/worker.py`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One data-block that reads files from disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// What it is: `image`, `library`, `movie clip`, `sound`, `font`,
    /// `volume`, `cache file`, `cache`, `strip`.
    pub kind: String,
    /// Its name in the .blend.
    pub name: String,
    /// The path as stored in the .blend (`//tex/wood.png`, `D:\tex\x.png`).
    pub path: String,
    /// The files it reads, as absolute paths on this machine (several for
    /// sequences, UDIM tiles and caches).
    pub files: Vec<PathBuf>,
    /// Those of `files` that are not there.
    #[serde(default)]
    pub missing: Vec<PathBuf>,
}

impl Dependency {
    /// Whether the .blend stores it as an absolute path (not `//`-relative):
    /// it renders from a copy on the nodes all the same, but the file is
    /// tied to this machine's folders.
    pub fn is_absolute(&self) -> bool {
        !self.path.starts_with("//")
    }

    /// Checks which files exist.
    pub fn check(&mut self) {
        self.missing = self
            .files
            .iter()
            .filter(|file| !file.is_absolute() || !file.is_file())
            .cloned()
            .collect();
    }

    /// One line for the user: `image 'wood' (//tex/wood.png)`.
    pub fn describe(&self) -> String {
        format!("{} '{}' ({})", self.kind, self.name, self.path)
    }
}

/// The files of `dependencies` to send, each once, sorted.
pub fn files_to_send(dependencies: &[Dependency]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = dependencies
        .iter()
        .flat_map(|dependency| {
            dependency
                .files
                .iter()
                .filter(|file| !dependency.missing.contains(file))
        })
        .cloned()
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Where an absolute path goes in a job's folder: the path without its root
/// (`/a/b.png` → `a/b.png`, `D:\a\b.png` → `D/a/b.png`), with `.` and `..`
/// resolved. `None` for a relative path or one that climbs above its root.
pub fn job_key(path: &Path) -> Option<String> {
    let text = path.to_string_lossy().replace('\\', "/");
    let (drive, rest) = match text.as_bytes() {
        [letter, b':', b'/', ..] if letter.is_ascii_alphabetic() => {
            (Some(char::from(*letter)), text[3..].to_string())
        }
        _ => (None, text.strip_prefix('/')?.to_string()),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    let mut key = parts.join("/");
    if let Some(drive) = drive {
        key = format!("{drive}/{key}");
    }
    // Whatever the path held (a NUL, a name over the limit), the key is one
    // a node accepts or none.
    crate::wire::is_safe_job_path(&key).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_the_root_and_resolve_dots() {
        assert_eq!(
            job_key(Path::new("/home/ann/tex/wood.png")).unwrap(),
            "home/ann/tex/wood.png"
        );
        assert_eq!(
            job_key(Path::new("/home/ann/shot/../tex/./a.png")).unwrap(),
            "home/ann/tex/a.png"
        );
        assert_eq!(
            job_key(Path::new("D:\\Dev\\tex\\a.png")).unwrap(),
            "D/Dev/tex/a.png"
        );
        assert_eq!(job_key(Path::new("relative/a.png")), None);
        assert_eq!(job_key(Path::new("/../../etc/passwd")), None);
        assert_eq!(job_key(Path::new("/")), None);
        // Found by fuzzing: a NUL in a name made an unsafe key.
        assert_eq!(job_key(Path::new("D:\\Dev\\tex\0\0.png")), None);
    }

    #[test]
    fn keys_are_safe_job_paths() {
        for path in ["/home/ann/tex/wood.png", "D:\\a\\b.png", "/x/../y/./z"] {
            let key = job_key(Path::new(path)).unwrap();
            assert!(crate::wire::is_safe_job_path(&key), "{key}");
        }
    }

    #[test]
    fn only_plain_relative_keys_are_safe() {
        use crate::wire::is_safe_job_path as is_safe_key;
        for good in ["a.png", "home/ann/tex/wood.png", "D/Dev/a b.png"] {
            assert!(is_safe_key(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\..\\b",
            "a\0b",
            "a/",
        ] {
            assert!(!is_safe_key(bad), "{bad:?}");
        }
        assert!(!is_safe_key(&"a/".repeat(3000)));
    }

    #[test]
    fn missing_files_are_found_and_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("a.png");
        std::fs::write(&there, b"x").unwrap();
        let gone = dir.path().join("b.png");
        let mut dependency = Dependency {
            kind: "image".into(),
            name: "tiles".into(),
            path: "//<UDIM>.png".into(),
            files: vec![there.clone(), gone.clone(), there.clone()],
            missing: Vec::new(),
        };
        dependency.check();
        assert_eq!(dependency.missing, vec![gone]);
        assert!(!dependency.is_absolute());
        assert_eq!(files_to_send(&[dependency]), vec![there]);
    }
}
