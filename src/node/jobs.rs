//! Job folders: where a job's .blend and the files it reads are laid out
//! for Blender, as hard links to the blob store (copies where links fail).
//! Every path comes from a checked [`Manifest`] (relative, plain parts), so
//! nothing is written outside `WORK/jobs`, whatever the scene's paths say;
//! Blender is then pointed at files inside the folder only (the worker's
//! relinking).
//!
//! A folder is named after the .blend and the manifest, built once under a
//! temporary name and renamed into place, and shared by every render of that
//! job. The most recently used folders are kept; older ones are removed once
//! no render holds them.
//!
//! The list of folders is behind a std `Mutex` that API handlers take on
//! async threads, so it is held only to look up or record a folder: the
//! files are linked, and old folders removed, outside it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::blobs::BlobStore;
use crate::wire::Manifest;

/// Job folders kept when no render holds them.
pub const KEPT_FOLDERS: usize = 8;

/// Name of the .blend in a job without a manifest.
pub const DEFAULT_BLEND_NAME: &str = "scene.blend";

/// A job's folder, with its .blend in it.
#[derive(Debug)]
pub struct JobFolder {
    /// The folder: Blender's files must all be inside it.
    pub dir: PathBuf,
    /// The .blend, inside `dir`.
    pub blend: PathBuf,
}

/// The job folders under `WORK/jobs`.
#[derive(Debug)]
pub struct JobFolders {
    dir: PathBuf,
    /// Folders in use or kept, the most recently used last.
    recent: Mutex<VecDeque<Arc<JobFolder>>>,
    /// Held while a folder is built (blocking threads only).
    building: Mutex<()>,
}

impl JobFolders {
    /// Job folders under `dir`; what an earlier run left there is removed.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            recent: Mutex::new(VecDeque::new()),
            building: Mutex::new(()),
        })
    }

    /// The folder of `.blend` `blend_hash` with the files of `manifest`
    /// (`manifest_hash` names it), laid out if it is not yet. Blocking: run
    /// it off the async threads. Every blob must be in `blobs` (pinned by
    /// the caller).
    pub fn lay_out(
        &self,
        blobs: &BlobStore,
        blend_hash: &str,
        manifest: Option<(&str, &Manifest)>,
    ) -> io::Result<Arc<JobFolder>> {
        let name = folder_name(blend_hash, manifest.map(|(hash, _)| hash));
        let dir = self.dir.join(&name);
        let blend_path = manifest.map_or(DEFAULT_BLEND_NAME, |(_, m)| m.blend_path.as_str());
        let folder = Arc::new(JobFolder {
            blend: dir.join(blend_path),
            dir: dir.clone(),
        });
        if let Some(kept) = self.take_recent(&dir) {
            return Ok(kept);
        }
        // One build at a time, so two renders of a new job build it once;
        // a render of a job laid out already does not wait for it.
        let _building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = self.take_recent(&dir) {
            return Ok(kept);
        }
        let building = self
            .dir
            .join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        let built = build(
            &building,
            blobs,
            blend_hash,
            blend_path,
            manifest.map(|(_, m)| m),
        )
        .and_then(|()| std::fs::rename(&building, &dir));
        if let Err(err) = built {
            let _ = std::fs::remove_dir_all(&building);
            return Err(err);
        }
        let evicted = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.push_back(Arc::clone(&folder));
            evict(&mut recent)
        };
        for old in evicted {
            if let Err(err) = std::fs::remove_dir_all(&old.dir) {
                tracing::warn!("cannot remove job folder {}: {err}", old.dir.display());
            }
        }
        Ok(folder)
    }

    /// The kept folder `dir`, marked as the most recently used.
    fn take_recent(&self, dir: &Path) -> Option<Arc<JobFolder>> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let position = recent.iter().position(|kept| kept.dir == dir)?;
        let kept = recent.remove(position)?;
        recent.push_back(Arc::clone(&kept));
        Some(kept)
    }

    /// The folder of this job if it is laid out already (a job's later
    /// frames: its manifest need not be read again). It never waits for a
    /// folder being built.
    pub fn existing(
        &self,
        blend_hash: &str,
        manifest_hash: Option<&str>,
    ) -> Option<Arc<JobFolder>> {
        self.take_recent(&self.dir.join(folder_name(blend_hash, manifest_hash)))
    }

    /// Where the folders are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes out of `recent` the oldest folders past [`KEPT_FOLDERS`] that no
/// render holds, for the caller to remove outside the lock.
fn evict(recent: &mut VecDeque<Arc<JobFolder>>) -> Vec<Arc<JobFolder>> {
    let mut evicted = Vec::new();
    let mut index = 0;
    while recent.len() > KEPT_FOLDERS && index < recent.len() {
        if Arc::strong_count(&recent[index]) == 1 {
            evicted.extend(recent.remove(index));
        } else {
            index += 1;
        }
    }
    evicted
}

/// A job folder's name: from the .blend's and the manifest's hashes.
fn folder_name(blend_hash: &str, manifest_hash: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(blend_hash.as_bytes());
    if let Some(manifest_hash) = manifest_hash {
        hasher.update(b"+");
        hasher.update(manifest_hash.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

/// Lays out the .blend and the manifest's files under `dir`.
fn build(
    dir: &Path,
    blobs: &BlobStore,
    blend_hash: &str,
    blend_path: &str,
    manifest: Option<&Manifest>,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    place(&blobs.path(blend_hash), &dir.join(blend_path))?;
    for file in manifest.iter().flat_map(|manifest| &manifest.files) {
        place(&blobs.path(&file.blob), &dir.join(&file.path))?;
    }
    Ok(())
}

/// Puts `blob` at `target`: a hard link (no copy, no space), else a copy.
fn place(blob: &Path, target: &Path) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::hard_link(blob, target) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(blob, target).map(|_| ()),
    }
    .map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot place {} in the job folder: {err}", target.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ManifestFile;

    fn store_with(dir: &Path, contents: &[&[u8]]) -> (Arc<BlobStore>, Vec<String>) {
        let blobs = BlobStore::open(&dir.join("blobs"), 1 << 30).unwrap();
        let mut hashes = Vec::new();
        for content in contents {
            let hash = hex::encode(Sha256::digest(content));
            std::fs::write(blobs.path(&hash), content).unwrap();
            hashes.push(hash);
        }
        (blobs, hashes)
    }

    #[test]
    fn files_are_laid_out_where_the_manifest_says_and_folders_are_shared() {
        let work = tempfile::tempdir().unwrap();
        let (blobs, hashes) = store_with(work.path(), &[b"blend", b"wood", b"lib"]);
        let folders = JobFolders::open(work.path().join("jobs")).unwrap();
        let manifest = Manifest {
            blend_path: "home/ann/shot/a.blend".into(),
            files: vec![
                ManifestFile {
                    path: "home/ann/shot/tex/wood.png".into(),
                    blob: hashes[1].clone(),
                },
                ManifestFile {
                    path: "mnt/lib/lib.blend".into(),
                    blob: hashes[2].clone(),
                },
            ],
        };
        let folder = folders
            .lay_out(&blobs, &hashes[0], Some(("m1", &manifest)))
            .unwrap();
        assert!(folder.dir.starts_with(folders.dir()));
        assert_eq!(std::fs::read(&folder.blend).unwrap(), b"blend");
        assert!(folder.blend.ends_with("home/ann/shot/a.blend"));
        let wood = folder.dir.join("home/ann/shot/tex/wood.png");
        assert_eq!(std::fs::read(wood).unwrap(), b"wood");
        assert_eq!(
            std::fs::read(folder.dir.join("mnt/lib/lib.blend")).unwrap(),
            b"lib"
        );

        let again = folders
            .lay_out(&blobs, &hashes[0], Some(("m1", &manifest)))
            .unwrap();
        assert!(Arc::ptr_eq(&folder, &again), "one folder per job");
        let found = folders.existing(&hashes[0], Some("m1")).unwrap();
        assert!(Arc::ptr_eq(&folder, &found));
        assert!(folders.existing(&hashes[0], Some("m2")).is_none());
        let alone = folders.lay_out(&blobs, &hashes[0], None).unwrap();
        assert_ne!(alone.dir, folder.dir);
        assert!(alone.blend.ends_with(DEFAULT_BLEND_NAME));
    }

    #[test]
    fn old_folders_go_unless_a_render_holds_them() {
        let work = tempfile::tempdir().unwrap();
        let (blobs, hashes) = store_with(work.path(), &[b"blend"]);
        let folders = JobFolders::open(work.path().join("jobs")).unwrap();
        let manifest = |n: usize| Manifest {
            blend_path: format!("job{n}.blend"),
            files: Vec::new(),
        };
        let held = folders
            .lay_out(&blobs, &hashes[0], Some(("m0", &manifest(0))))
            .unwrap();
        for n in 1..=KEPT_FOLDERS + 3 {
            let name = format!("m{n}");
            folders
                .lay_out(&blobs, &hashes[0], Some((&name, &manifest(n))))
                .unwrap();
        }
        assert!(held.blend.is_file(), "a held folder stays");
        let left = std::fs::read_dir(folders.dir()).unwrap().count();
        assert_eq!(left, KEPT_FOLDERS);
    }

    #[test]
    fn a_folder_being_built_does_not_hold_up_the_others() {
        let work = tempfile::tempdir().unwrap();
        let (blobs, hashes) = store_with(work.path(), &[b"blend", b"texture"]);
        let folders = Arc::new(JobFolders::open(work.path().join("jobs")).unwrap());
        let small = Manifest {
            blend_path: "small.blend".into(),
            files: Vec::new(),
        };
        folders
            .lay_out(&blobs, &hashes[0], Some(("small", &small)))
            .unwrap();
        // A job of 20,000 files takes a while to link.
        let large = Manifest {
            blend_path: "large.blend".into(),
            files: (0..20_000)
                .map(|n| ManifestFile {
                    path: format!("tex/{n}.png"),
                    blob: hashes[1].clone(),
                })
                .collect(),
        };
        let builder = {
            let (folders, blobs, hash) =
                (Arc::clone(&folders), Arc::clone(&blobs), hashes[0].clone());
            std::thread::spawn(move || {
                folders
                    .lay_out(&blobs, &hash, Some(("large", &large)))
                    .unwrap();
            })
        };
        let in_progress = || {
            std::fs::read_dir(folders.dir())
                .unwrap()
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        };
        while !in_progress() {
            assert!(!builder.is_finished(), "the build was seen");
            std::thread::yield_now();
        }
        assert!(folders.existing(&hashes[0], Some("small")).is_some());
        assert!(
            in_progress(),
            "the other job's folder was found while the large one was still being built"
        );
        builder.join().unwrap();
        assert!(folders.existing(&hashes[0], Some("large")).is_some());
    }

    #[test]
    fn a_missing_blob_leaves_no_half_folder() {
        let work = tempfile::tempdir().unwrap();
        let (blobs, hashes) = store_with(work.path(), &[b"blend"]);
        let folders = JobFolders::open(work.path().join("jobs")).unwrap();
        let manifest = Manifest {
            blend_path: "a.blend".into(),
            files: vec![ManifestFile {
                path: "tex/gone.png".into(),
                blob: "0".repeat(64),
            }],
        };
        assert!(
            folders
                .lay_out(&blobs, &hashes[0], Some(("m", &manifest)))
                .is_err()
        );
        assert_eq!(std::fs::read_dir(folders.dir()).unwrap().count(), 0);
    }
}
