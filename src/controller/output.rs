//! The job's output folder: frame file names, atomic writes of checked
//! images, and finding frames already there (resume).

use std::path::{Path, PathBuf};

use crate::wire::ImageFormat;

/// File extension Blender gives `format`.
pub fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpg",
        ImageFormat::OpenExr => "exr",
    }
}

/// Reads a Blender format name (`PNG`, `JPEG`, `OPEN_EXR`); others are not
/// formats herd collects.
pub fn format_from_blender(name: &str) -> Option<ImageFormat> {
    match name {
        "PNG" => Some(ImageFormat::Png),
        "JPEG" => Some(ImageFormat::Jpeg),
        "OPEN_EXR" | "OPEN_EXR_MULTILAYER" => Some(ImageFormat::OpenExr),
        _ => None,
    }
}

/// Where a job's frames go and what they are called.
#[derive(Debug, Clone)]
pub struct OutputDir {
    /// The folder.
    pub dir: PathBuf,
    /// File name stem, the .blend's name.
    pub stem: String,
    /// File extension of the frames.
    pub extension: String,
}

impl OutputDir {
    /// The frames of `blend` in `format` go to `dir`.
    pub fn new(dir: PathBuf, blend: &Path, format: ImageFormat) -> Self {
        let stem = blend.file_stem().map_or_else(
            || "frame".into(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        // `.blend1` backups keep their stem; the number is not part of it.
        Self {
            dir,
            stem,
            extension: extension(format).to_string(),
        }
    }

    /// The default folder: `<blend name>_frames/` next to the .blend.
    pub fn default_dir(blend: &Path) -> PathBuf {
        let stem = blend.file_stem().map_or_else(
            || "frames".into(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        blend
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("{stem}_frames"))
    }

    /// `<dir>/<stem>_<frame, zero-padded to 4>.<ext>`.
    pub fn frame_path(&self, frame: i32) -> PathBuf {
        self.dir
            .join(format!("{}_{frame:04}.{}", self.stem, self.extension))
    }

    /// A temporary name next to the frame's, for writing before the rename.
    pub fn temp_path(&self, frame: i32) -> PathBuf {
        self.dir.join(format!(
            ".{}_{frame:04}.{}.part",
            self.stem,
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Whether a valid image of `frame` is already there: it exists and its
    /// header reads with the expected size (when known).
    pub fn has_valid(&self, frame: i32, expected: Option<(u32, u32)>) -> bool {
        match image::image_dimensions(self.frame_path(frame)) {
            Ok(size) => expected.is_none_or(|expected| expected == size),
            Err(_) => false,
        }
    }

    /// Removes temporary files a crash left behind.
    pub fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!(".{}_", self.stem);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Checks that `bytes` is an image of the expected size; the error says what
/// is wrong.
pub fn check_image(bytes: &[u8], expected: Option<(u32, u32)>) -> Result<(u32, u32), String> {
    let image = image::load_from_memory(bytes)
        .map_err(|err| format!("the node's image does not decode: {err}"))?;
    let size = (image.width(), image.height());
    if let Some(expected) = expected
        && expected != size
    {
        return Err(format!(
            "the node's image is {}x{}, expected {}x{}",
            size.0, size.1, expected.0, expected.1
        ));
    }
    Ok(size)
}

/// Writes `bytes` to `temp`, flushes it to disk and renames it to `path`:
/// a crash leaves either the old state or the whole frame, never half.
pub fn write_atomically(temp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let result = (|| {
        let mut file = std::fs::File::create(temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_frames_after_the_blend() {
        let out = OutputDir::new(
            "/renders".into(),
            Path::new("/art/shot 1.blend"),
            ImageFormat::Png,
        );
        assert_eq!(out.frame_path(7), Path::new("/renders/shot 1_0007.png"));
        assert_eq!(
            out.frame_path(12345),
            Path::new("/renders/shot 1_12345.png")
        );
        assert_eq!(
            OutputDir::default_dir(Path::new("/art/shot.blend")),
            Path::new("/art/shot_frames")
        );
    }

    #[test]
    fn atomic_writes_leave_no_temp_and_valid_frames_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::new(dir.path().into(), Path::new("a.blend"), ImageFormat::Png);
        let mut png = Vec::new();
        image::RgbImage::new(4, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(check_image(&png, Some((4, 2))), Ok((4, 2)));
        assert!(
            check_image(&png, Some((8, 2)))
                .unwrap_err()
                .contains("expected 8x2")
        );
        assert!(
            check_image(b"nope", None)
                .unwrap_err()
                .contains("does not decode")
        );
        write_atomically(&out.temp_path(3), &out.frame_path(3), &png).unwrap();
        assert!(out.has_valid(3, Some((4, 2))));
        assert!(!out.has_valid(3, Some((5, 2))));
        assert!(!out.has_valid(4, None));
        std::fs::write(out.temp_path(5), b"half").unwrap();
        out.remove_stale_temps();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
