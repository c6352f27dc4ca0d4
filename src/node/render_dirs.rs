//! The renders' folders: one per render, named by its id, with the `image/`
//! folder Blender writes the frame into.
//!
//! Making a folder costs more than any other file operation on common file
//! systems (ext4 searches its block groups for a place; NTFS builds an index),
//! and a cheap frame paid for two of them and two removals. So a folder whose
//! render is forgotten is emptied and kept as a spare, and the next render
//! gets it by a rename. Only its empty `image/` folder is kept; a spare that
//! cannot be emptied is removed instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Spare folders kept at most: more than a node holds renders at once in a
/// job (one rendering, those queued behind it, those being fetched).
const MAX_SPARES: usize = 8;

/// The folder Blender writes a render's frame into, inside its folder.
const IMAGE: &str = "image";

/// The renders' folders of a node (`work_dir/renders`).
#[derive(Debug)]
pub struct RenderDirs {
    root: PathBuf,
    spare_root: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
    next_spare: AtomicU64,
}

impl RenderDirs {
    /// Starts `root` empty: frames of an earlier run belong to render ids
    /// nobody can ask for.
    pub fn open(root: PathBuf) -> io::Result<Self> {
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        let spare_root = root.join(".spare");
        std::fs::create_dir_all(&spare_root)?;
        Ok(Self {
            root,
            spare_root,
            spares: Mutex::new(Vec::new()),
            next_spare: AtomicU64::new(0),
        })
    }

    fn spares(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The folder of all renders.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of render `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the folder of render `id`, with an empty `image/` in it, and
    /// returns it: a spare renamed when there is one. Blocking.
    pub fn create(&self, id: &str) -> io::Result<PathBuf> {
        let dir = self.path(id);
        let spare = self.spares().pop();
        if let Some(spare) = spare {
            match std::fs::rename(&spare, &dir) {
                Ok(()) => return Ok(dir),
                Err(err) => {
                    tracing::debug!("cannot reuse {}: {err}", spare.display());
                    let _ = std::fs::remove_dir_all(&spare);
                }
            }
        }
        std::fs::create_dir_all(dir.join(IMAGE))?;
        Ok(dir)
    }

    /// Ends the folder of render `id`: emptied and kept as a spare while
    /// there are fewer than [`MAX_SPARES`], else removed. Blocking.
    pub fn recycle(&self, id: &str) -> io::Result<()> {
        let dir = self.path(id);
        if self.spares().len() < MAX_SPARES && empty_but_image(&dir).is_ok() {
            let number = self.next_spare.fetch_add(1, Ordering::Relaxed);
            let spare = self.spare_root.join(number.to_string());
            if std::fs::rename(&dir, &spare).is_ok() {
                self.spares().push(spare);
                return Ok(());
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// Removes everything in `dir` but an `image/` folder, and everything in
/// that; fails if `dir` holds no `image/` folder when done.
fn empty_but_image(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if entry.file_name() == IMAGE {
                empty(&path)?;
            } else {
                std::fs::remove_dir_all(&path)?;
            }
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    if dir.join(IMAGE).is_dir() {
        Ok(())
    } else {
        std::fs::create_dir(dir.join(IMAGE))
    }
}

/// Removes everything in `dir`.
fn empty(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_renders_folder_comes_back_empty_for_the_next() {
        let work = tempfile::tempdir().unwrap();
        let dirs = RenderDirs::open(work.path().join("renders")).unwrap();
        let first = dirs.create("a").unwrap();
        assert!(first.join("image").is_dir());
        std::fs::write(first.join("image/frame_0001.png"), b"png").unwrap();
        std::fs::create_dir_all(first.join("image/left")).unwrap();
        std::fs::write(first.join("image/left/frame_0001.png"), b"png").unwrap();
        std::fs::create_dir_all(first.join("fo/0")).unwrap();
        std::fs::write(first.join("fo/0/depth0001.exr"), b"exr").unwrap();
        std::fs::write(first.join("thumbnail.png"), b"png").unwrap();
        dirs.recycle("a").unwrap();
        assert!(!first.exists());

        let second = dirs.create("b").unwrap();
        assert_eq!(second, work.path().join("renders/b"));
        let inside: Vec<_> = std::fs::read_dir(&second).unwrap().collect();
        assert_eq!(inside.len(), 1, "only image/ is kept");
        assert_eq!(std::fs::read_dir(second.join("image")).unwrap().count(), 0);
    }

    #[test]
    fn spares_are_bounded_and_the_rest_removed() {
        let work = tempfile::tempdir().unwrap();
        let dirs = RenderDirs::open(work.path().join("renders")).unwrap();
        let ids: Vec<String> = (0..MAX_SPARES + 3).map(|n| n.to_string()).collect();
        for id in &ids {
            dirs.create(id).unwrap();
        }
        for id in &ids {
            dirs.recycle(id).unwrap();
            assert!(!dirs.path(id).exists());
        }
        let spares = std::fs::read_dir(work.path().join("renders/.spare"))
            .unwrap()
            .count();
        assert_eq!(spares, MAX_SPARES);
        // A folder already gone is not an error.
        dirs.recycle("never-made").unwrap();
    }

    #[test]
    fn an_earlier_runs_renders_are_removed_on_open() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("renders");
        std::fs::create_dir_all(root.join("old/image")).unwrap();
        RenderDirs::open(root.clone()).unwrap();
        assert!(!root.join("old").exists());
    }
}
