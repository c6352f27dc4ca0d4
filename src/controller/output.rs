//! Where a job's files go: the frames where the scene's output path says
//! (Blender's own names, `#` rules and extensions), the files of its File
//! Output nodes where those say, herd's folder beside the .blend where a path
//! cannot be used on this machine; atomic writes of checked files, and
//! finding frames already there (resume).

use std::path::{Component, Path, PathBuf};

use super::inspect::SceneInfo;
use crate::wire::ImageFormat;

/// File extension Blender gives `format`.
pub fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpg",
        ImageFormat::OpenExr => "exr",
    }
}

/// Reads a format name herd can override to (`PNG`, `JPEG`, `OPEN_EXR`).
pub fn format_from_blender(name: &str) -> Option<ImageFormat> {
    match name {
        "PNG" => Some(ImageFormat::Png),
        "JPEG" => Some(ImageFormat::Jpeg),
        "OPEN_EXR" | "OPEN_EXR_MULTILAYER" => Some(ImageFormat::OpenExr),
        _ => None,
    }
}

/// Blender's movie formats: herd writes their frames as PNG.
pub fn is_movie_format(name: &str) -> bool {
    matches!(
        name,
        "FFMPEG" | "AVI_JPEG" | "AVI_RAW" | "FRAMESERVER" | "H264" | "XVID" | "THEORA"
    )
}

/// The extensions Blender accepts for a still format (the first is the one it
/// adds), as in its `BKE_image_path_ensure_ext_from_imformat`.
fn blender_extensions(format: &str) -> &'static [&'static str] {
    match format {
        "PNG" => &[".png"],
        "JPEG" => &[".jpg", ".jpeg"],
        "OPEN_EXR" | "OPEN_EXR_MULTILAYER" => &[".exr"],
        "TIFF" => &[".tif", ".tiff"],
        "BMP" => &[".bmp"],
        "TARGA" | "TARGA_RAW" => &[".tga"],
        "IRIS" => &[".rgb"],
        "JPEG2000" => &[".jp2", ".j2c"],
        "CINEON" => &[".cin"],
        "DPX" => &[".dpx"],
        "HDR" => &[".hdr"],
        "WEBP" => &[".webp"],
        _ => &[".png"],
    }
}

/// Every image extension Blender knows: one of these at the end of a name is
/// replaced rather than followed by the format's.
const IMAGE_EXTENSIONS: &[&str] = &[
    ".png", ".tga", ".bmp", ".jpg", ".jpeg", ".sgi", ".rgb", ".rgba", ".tif", ".tiff", ".tx",
    ".jp2", ".j2c", ".hdr", ".dds", ".dpx", ".cin", ".exr", ".rw2", ".webp", ".psd", ".pdd",
    ".psb",
];

/// The file name Blender gives frame `frame` of the output name `name`
/// (the file part of the output path): the last run of `#` in it becomes
/// the frame number padded to its length, else the number padded to four
/// digits is appended; then the format's extension when `extension` is on.
pub fn blender_file_name(name: &str, frame: i32, format: &str, extension: bool) -> String {
    let mut file = match name.rfind('#') {
        Some(end) => {
            let start = name[..=end].trim_end_matches('#').len();
            let digits = end + 1 - start;
            format!("{}{frame:0digits$}{}", &name[..start], &name[end + 1..])
        }
        None => format!("{name}{frame:04}"),
    };
    if extension {
        let accepted = blender_extensions(format);
        let lower = file.to_ascii_lowercase();
        if !accepted.iter().any(|ext| lower.ends_with(ext)) {
            if let Some(known) = IMAGE_EXTENSIONS.iter().find(|ext| lower.ends_with(*ext))
                && file.len() > known.len()
            {
                file.truncate(file.len() - known.len());
            }
            file.push_str(accepted[0]);
        }
    }
    file
}

/// Where an output path of a scene (`render.filepath`, a File Output node's
/// folder) points on this machine: the folder and the file part, or why
/// herd cannot write there.
pub fn resolve_output_path(raw: &str, blend: &Path) -> Result<(PathBuf, String), String> {
    let unified = raw.replace('\\', "/");
    if unified.trim().is_empty() {
        return Err("the path is empty".into());
    }
    if matches!(unified.as_str(), "/tmp/" | "/tmp") {
        return Err("it is Blender's untouched default /tmp/".into());
    }
    let base = blend.parent().unwrap_or_else(|| Path::new("."));
    let path = if let Some(relative) = unified.strip_prefix("//") {
        base.join(relative)
    } else if is_windows_absolute(&unified) {
        if !cfg!(windows) {
            return Err(format!("{raw} is a Windows path"));
        }
        PathBuf::from(raw)
    } else if Path::new(&unified).is_absolute() {
        let path = PathBuf::from(&unified);
        missing_mount(&path)?;
        path
    } else {
        return Err(format!(
            "{raw} is relative to the folder Blender was started in, not to the .blend"
        ));
    };
    let path = normalize(&path);
    // The file part is what follows the last slash (empty for a folder).
    let name = unified.rsplit('/').next().unwrap_or_default().to_string();
    let dir = if name.is_empty() {
        path
    } else {
        path.parent()
            .map_or_else(|| path.clone(), Path::to_path_buf)
    };
    Ok((dir, name))
}

fn is_windows_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'/'
}

/// An absolute path under a mount that is not there (`/mnt/nas/...` with no
/// `/mnt/nas`) cannot be written on this machine.
fn missing_mount(path: &Path) -> Result<(), String> {
    const MOUNT_PARENTS: &[&str] = &["/", "/mnt", "/media", "/run/media", "/Volumes", "/net"];
    let mut existing = path;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    let existing_text = existing.to_string_lossy();
    if MOUNT_PARENTS.contains(&existing_text.as_ref()) && existing != path {
        let below = path
            .strip_prefix(existing)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|part| existing.join(part))
            .unwrap_or_else(|| path.to_path_buf());
        return Err(format!("{} is not there on this machine", below.display()));
    }
    Ok(())
}

/// `a/b/../c` → `a/c`, without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where a job's files go.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputPlan {
    /// The frames' folder; the job's journal is kept there.
    pub dir: PathBuf,
    /// The file part of the frames' path, named by Blender's rules
    /// (e.g. `shot_###`; empty: the frame number alone).
    pub name: String,
    /// The format Blender writes the frames in (`PNG`, `OPEN_EXR_MULTILAYER`, ...).
    pub format: String,
    /// Whether Blender adds the format's extension.
    pub use_extension: bool,
    /// The folder of each File Output node of the scene, in the tree's order.
    pub file_outputs: Vec<PathBuf>,
    /// For a movie scene: the movie's folder and the file part of its name
    /// (see [`super::movie`]); the frames are its PNG intermediates.
    pub movie: Option<PathBuf>,
    /// Where herd does not write where the scene says, and why: said before
    /// the job starts.
    pub notes: Vec<String>,
}

impl OutputPlan {
    /// Where `scene`'s files go: `out` (a folder the user chose) holds the
    /// frames as `<blend name>_####`; without it the scene's output path
    /// does, or herd's folder beside the .blend when that path cannot be
    /// used here. `format` is the user's override of the scene's format.
    pub fn for_scene(scene: &SceneInfo, out: Option<&Path>, format: Option<ImageFormat>) -> Self {
        let blend = &scene.file;
        let mut notes = Vec::new();
        let mut scene_format = scene.file_format.clone();
        let herd_name = format!("{}_####", stem(blend));
        let mut movie = None;
        if is_movie_format(&scene_format) && format.is_none() {
            // Frames to herd's folder (or --out), the movie where the scene
            // says once they are all in.
            let target = match out {
                Some(out) => out.join(format!("{}_", stem(blend))),
                None => match resolve_output_path(&scene.output_path, blend) {
                    Ok((dir, name)) => dir.join(name),
                    Err(why) => {
                        let target = Self::default_dir(blend).join(format!("{}_", stem(blend)));
                        notes.push(format!(
                            "the scene's output path {:?} is not used ({why}): the movie goes to {}",
                            scene.output_path,
                            target.display()
                        ));
                        target
                    }
                },
            };
            let frames = out.map_or_else(|| Self::default_dir(blend), Path::to_path_buf);
            notes.push(format!(
                "the scene's output is a movie ({scene_format}): the frames are rendered to PNG in {} and the movie ({}…) is encoded from them with the scene's settings once all are in",
                frames.display(),
                target.display()
            ));
            movie = Some(target);
            scene_format = "PNG".into();
        }
        let format = match format {
            Some(ImageFormat::Png) => "PNG".to_string(),
            Some(ImageFormat::Jpeg) => "JPEG".to_string(),
            Some(ImageFormat::OpenExr) if scene_format.starts_with("OPEN_EXR") => scene_format,
            Some(ImageFormat::OpenExr) => "OPEN_EXR".to_string(),
            None => scene_format,
        };
        let (dir, name) = match out {
            Some(out) => (out.to_path_buf(), herd_name),
            None if movie.is_some() => (Self::default_dir(blend), herd_name),
            None => match resolve_output_path(&scene.output_path, blend) {
                Ok(place) => place,
                Err(why) => {
                    let dir = Self::default_dir(blend);
                    notes.push(format!(
                        "the scene's output path {:?} is not used ({why}): frames go to {}",
                        scene.output_path,
                        dir.display()
                    ));
                    (dir, herd_name)
                }
            },
        };
        let file_outputs = scene
            .file_outputs
            .iter()
            .map(|node| match resolve_output_path(&node.path, blend) {
                Ok((folder, _)) => folder,
                Err(why) => {
                    let folder = dir.join(safe_name(&node.name));
                    notes.push(format!(
                        "File Output node '{}' writes to {:?}, not used ({why}): its files go to {}",
                        node.name,
                        node.path,
                        folder.display()
                    ));
                    folder
                }
            })
            .collect();
        Self {
            dir,
            name,
            format,
            use_extension: scene.use_file_extension,
            file_outputs,
            movie,
            notes,
        }
    }

    /// herd's own folder: `<blend name>_frames/` next to the .blend.
    pub fn default_dir(blend: &Path) -> PathBuf {
        blend
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("{}_frames", stem(blend)))
    }

    /// Where Blender's image of `frame` goes (one view; a multiview scene
    /// adds each view's suffix).
    pub fn frame_path(&self, frame: i32) -> PathBuf {
        self.dir.join(blender_file_name(
            &self.name,
            frame,
            &self.format,
            self.use_extension,
        ))
    }

    /// Where an output a node lists (`image/NAME`, `fo/K/PATH`) goes here;
    /// `None` for a path that would leave its folder.
    pub fn place(&self, output: &str) -> Option<PathBuf> {
        let (root, rest) = if let Some(rest) = output.strip_prefix("image/") {
            (self.dir.clone(), rest)
        } else {
            let rest = output.strip_prefix("fo/")?;
            let (index, rest) = rest.split_once('/')?;
            let index: usize = index.parse().ok()?;
            let root = self
                .file_outputs
                .get(index)
                .cloned()
                .unwrap_or_else(|| self.dir.join(format!("file_output_{index}")));
            (root, rest)
        };
        let plain = !rest.is_empty()
            && rest.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', '\0'])
            });
        plain.then(|| root.join(rest))
    }

    /// Whether a valid image of `frame` is already there: it exists and, for
    /// formats herd reads, its header has the expected size (when known).
    pub fn has_valid(&self, frame: i32, expected: Option<(u32, u32)>) -> bool {
        check_file(&self.frame_path(frame), expected).is_ok()
    }

    /// Removes temporary files a crash left behind in the job's folders.
    pub fn remove_stale_temps(&self) {
        for dir in std::iter::once(&self.dir).chain(&self.file_outputs) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

fn stem(blend: &Path) -> String {
    blend.file_stem().map_or_else(
        || "frame".into(),
        |stem| stem.to_string_lossy().into_owned(),
    )
}

/// A node's name as one folder name.
fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match safe.trim_matches('.') {
        "" => "File Output".into(),
        trimmed => trimmed.to_string(),
    }
}

const TEMP_PREFIX: &str = ".herd-part-";

/// A temporary name beside `path` (with its extension), for writing before
/// the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    path.with_file_name(format!(
        "{TEMP_PREFIX}{}-{}",
        uuid::Uuid::new_v4().simple(),
        name.unwrap_or_default()
    ))
}

/// Makes `to` (a [`temp_path`]) a hard link to `from`, its folder created if
/// needed, and flushes it to disk; on failure nothing is left at `to`. Fails
/// when the two are on different filesystems.
pub fn link_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::hard_link(from, to)?;
    // Opened for writing: Windows flushes only a handle that may write.
    let synced = std::fs::OpenOptions::new()
        .write(true)
        .open(to)
        .and_then(|file| file.sync_all());
    if synced.is_err() {
        let _ = std::fs::remove_file(to);
    }
    synced
}

/// Checks what herd can check of a file Blender wrote: an image herd decodes
/// has the expected size (when known), an OpenEXR file has a readable header
/// of that size; other formats must not be empty. Returns the size when read.
pub fn check_file(path: &Path, expected: Option<(u32, u32)>) -> Result<Option<(u32, u32)>, String> {
    check_file_as(path, path, expected)
}

/// [`check_file`] of `path` as the file `named` (its format by that name's
/// extension; messages name it).
pub fn check_file_as(
    path: &Path,
    named: &Path,
    expected: Option<(u32, u32)>,
) -> Result<Option<(u32, u32)>, String> {
    let ext = named
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let size = match ext.as_str() {
        "exr" => {
            let meta = exr::meta::MetaData::read_from_file(path, false).map_err(|err| {
                format!("{} is not a readable OpenEXR file: {err}", named.display())
            })?;
            let header = meta
                .headers
                .first()
                .ok_or_else(|| format!("{} has no OpenEXR layer", named.display()))?;
            let size = header.layer_size;
            Some((
                u32::try_from(size.0).unwrap_or(u32::MAX),
                u32::try_from(size.1).unwrap_or(u32::MAX),
            ))
        }
        "png" | "jpg" | "jpeg" | "tif" | "tiff" => Some(
            image::image_dimensions(path)
                .map_err(|err| format!("{} does not decode: {err}", named.display()))?,
        ),
        _ => {
            let bytes = std::fs::metadata(path)
                .map_err(|err| format!("{} cannot be read: {err}", named.display()))?
                .len();
            if bytes == 0 {
                return Err(format!("{} is empty", named.display()));
            }
            None
        }
    };
    if let (Some(size), Some(expected)) = (size, expected)
        && size != expected
    {
        return Err(format!(
            "{} is {}x{}, expected {}x{}",
            named.display(),
            size.0,
            size.1,
            expected.0,
            expected.1
        ));
    }
    Ok(size)
}

/// Writes `bytes` to `temp`, flushes it to disk and renames it to `path`:
/// a crash leaves either the old state or the whole file, never half.
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
    fn names_files_as_blender_does() {
        assert_eq!(
            blender_file_name("shot_###", 7, "PNG", true),
            "shot_007.png"
        );
        assert_eq!(blender_file_name("shot_", 7, "PNG", true), "shot_0007.png");
        assert_eq!(
            blender_file_name("", 12345, "OPEN_EXR_MULTILAYER", true),
            "12345.exr"
        );
        assert_eq!(
            blender_file_name("a_##_b_####", 3, "TIFF", true),
            "a_##_b_0003.tif"
        );
        assert_eq!(blender_file_name("f_##.tiff", 3, "TIFF", true), "f_03.tiff");
        assert_eq!(blender_file_name("f_##.png", 3, "JPEG", true), "f_03.jpg");
        assert_eq!(blender_file_name("f_##.v1", 3, "PNG", false), "f_03.v1");
    }

    #[test]
    fn output_paths_resolve_beside_the_blend_or_say_why_not() {
        let blend = Path::new("/art/shot/scene.blend");
        assert_eq!(
            resolve_output_path("//renders/shot_###", blend),
            Ok((PathBuf::from("/art/shot/renders"), "shot_###".into()))
        );
        assert_eq!(
            resolve_output_path("//../out/", blend),
            Ok((PathBuf::from("/art/out"), String::new()))
        );
        assert_eq!(
            resolve_output_path("//..\\out\\f_", blend),
            Ok((PathBuf::from("/art/out"), "f_".into()))
        );
        assert!(
            resolve_output_path("/tmp/", blend)
                .unwrap_err()
                .contains("default")
        );
        assert!(
            resolve_output_path("./render/", blend)
                .unwrap_err()
                .contains("relative")
        );
        assert!(
            resolve_output_path("", blend)
                .unwrap_err()
                .contains("empty")
        );
        if !cfg!(windows) {
            assert!(
                resolve_output_path("D:\\renders\\f_", blend)
                    .unwrap_err()
                    .contains("Windows")
            );
            assert!(
                resolve_output_path("/mnt/herd-no-such-nas/renders/f_", blend)
                    .unwrap_err()
                    .contains("/mnt/herd-no-such-nas is not there")
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let absolute = format!("{}/new/f_####", dir.path().display());
        assert_eq!(
            resolve_output_path(&absolute, blend),
            Ok((dir.path().join("new"), "f_####".into()))
        );
    }

    fn scene(output_path: &str, format: &str) -> SceneInfo {
        let mut scene = crate::controller::inspect::tests::scene_info();
        scene.file = "/art/shot/scene.blend".into();
        scene.output_path = output_path.into();
        scene.file_format = format.into();
        scene
    }

    #[test]
    fn plans_follow_the_scene_or_fall_back_with_a_note() {
        let plan = OutputPlan::for_scene(&scene("//renders/shot_###", "TIFF"), None, None);
        assert_eq!(
            plan.frame_path(4),
            Path::new("/art/shot/renders/shot_004.tif")
        );
        assert!(plan.notes.is_empty());
        let plan = OutputPlan::for_scene(&scene("/tmp/", "PNG"), None, None);
        assert_eq!(
            plan.frame_path(4),
            Path::new("/art/shot/scene_frames/scene_0004.png")
        );
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        let plan = OutputPlan::for_scene(
            &scene("//renders/shot_###", "PNG"),
            Some(Path::new("/out")),
            Some(ImageFormat::Jpeg),
        );
        assert_eq!(plan.frame_path(12), Path::new("/out/scene_0012.jpg"));
        let plan = OutputPlan::for_scene(&scene("//r/shot_", "FFMPEG"), None, None);
        assert_eq!(
            plan.frame_path(1),
            Path::new("/art/shot/scene_frames/scene_0001.png")
        );
        assert_eq!(plan.movie, Some("/art/shot/r/shot_".into()));
        assert!(plan.notes[0].contains("movie"));
        let plan = OutputPlan::for_scene(&scene("/tmp/", "FFMPEG"), None, None);
        assert_eq!(plan.movie, Some("/art/shot/scene_frames/scene_".into()));
    }

    #[test]
    fn places_outputs_inside_their_folders_only() {
        let mut info = scene("//r/f_", "PNG");
        info.file_outputs = vec![
            crate::controller::inspect::FileOutputInfo {
                name: "passes".into(),
                path: "//passes/".into(),
            },
            crate::controller::inspect::FileOutputInfo {
                name: "depth/abs".into(),
                path: "Z:\\nas\\depth_".into(),
            },
        ];
        let plan = OutputPlan::for_scene(&info, None, None);
        assert_eq!(
            plan.place("image/f_0001.png"),
            Some("/art/shot/r/f_0001.png".into())
        );
        assert_eq!(
            plan.place("fo/0/normal/n_0001.exr"),
            Some("/art/shot/passes/normal/n_0001.exr".into())
        );
        if !cfg!(windows) {
            assert_eq!(
                plan.place("fo/1/depth_0001.png"),
                Some("/art/shot/r/depth_abs/depth_0001.png".into())
            );
        }
        assert_eq!(
            plan.place("fo/7/x.png"),
            Some("/art/shot/r/file_output_7/x.png".into())
        );
        for bad in [
            "image/../x.png",
            "image/",
            "fo/0//x",
            "fo/x/y",
            "other/x",
            "image/a\\..\\b",
        ] {
            assert_eq!(plan.place(bad), None, "{bad}");
        }
    }

    #[test]
    fn checks_what_it_can_read_and_finds_valid_frames() {
        let dir = tempfile::tempdir().unwrap();
        let plan = OutputPlan {
            dir: dir.path().into(),
            name: "a_####".into(),
            format: "PNG".into(),
            use_extension: true,
            file_outputs: Vec::new(),
            movie: None,
            notes: Vec::new(),
        };
        let mut png = Vec::new();
        image::RgbImage::new(4, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let path = plan.frame_path(3);
        write_atomically(&temp_path(&path), &path, &png).unwrap();
        assert_eq!(check_file(&path, Some((4, 2))), Ok(Some((4, 2))));
        assert!(
            check_file(&path, Some((8, 2)))
                .unwrap_err()
                .contains("expected 8x2")
        );
        assert!(plan.has_valid(3, Some((4, 2))));
        assert!(!plan.has_valid(3, Some((5, 2))));
        assert!(!plan.has_valid(4, None));
        let broken = dir.path().join("b.exr");
        std::fs::write(&broken, b"nope").unwrap();
        assert!(check_file(&broken, None).unwrap_err().contains("OpenEXR"));
        std::fs::write(temp_path(&plan.frame_path(5)), b"half").unwrap();
        plan.remove_stale_temps();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// A local node's file is linked at a temporary name in the output
    /// folder, checked there, and only then renamed into place; the node
    /// removing its own copy leaves the frame whole.
    #[test]
    fn a_linked_file_is_checked_under_its_temp_name_then_placed() {
        let node = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut png = Vec::new();
        image::RgbImage::new(4, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let rendered = node.path().join("id/image/a_0003.png");
        std::fs::create_dir_all(rendered.parent().unwrap()).unwrap();
        std::fs::write(&rendered, &png).unwrap();
        let path = out.path().join("frames/a_0003.png");
        let temp = temp_path(&path);
        link_synced(&rendered, &temp).unwrap();
        assert!(
            !path.exists(),
            "nothing at the frame's place before the rename"
        );
        assert_eq!(check_file_as(&temp, &path, Some((4, 2))), Ok(Some((4, 2))));
        assert!(check_file_as(&temp, &path, Some((8, 2))).is_err());
        std::fs::rename(&temp, &path).unwrap();
        std::fs::remove_dir_all(node.path().join("id")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), png);
        let missing = node.path().join("gone.png");
        let temp = temp_path(&path);
        assert!(link_synced(&missing, &temp).is_err());
        assert!(!temp.exists());
    }
}
