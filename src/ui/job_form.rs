//! The job panel's fields and how they become a [`JobSpec`], the way
//! `herd render` builds one from a scene and its flags.

use std::path::{Path, PathBuf};

use crate::controller::engine::{JobChoices, JobSpec};
use crate::controller::frames::parse_frames;
use crate::controller::inspect::SceneInfo;
use crate::controller::output::OutputPlan;
use crate::wire::ImageFormat;

/// The formats the window offers, with their names.
pub const FORMATS: [(ImageFormat, &str); 3] = [
    (ImageFormat::Png, "PNG"),
    (ImageFormat::Jpeg, "JPEG"),
    (ImageFormat::OpenExr, "OpenEXR"),
];

/// What the user set in the job panel; the scene's own values by default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobForm {
    /// Frame list as typed, e.g. `1-24,30`.
    pub frames: String,
    /// Output folder as typed.
    pub output_dir: String,
    /// Resolution percentage.
    pub resolution_percent: u32,
    /// Samples, for engines that have them.
    pub samples: Option<u32>,
    /// Output format; none: the scene's own.
    pub format: Option<ImageFormat>,
    /// The scene to render, when the user picked one; none: the file's
    /// active scene.
    #[serde(default)]
    pub scene: Option<String>,
    /// Keep a Cycles scene warm between frames (persistent data).
    #[serde(default = "yes")]
    pub warm_scene: bool,
    /// Render frames again even when the output folder has them.
    pub overwrite: bool,
}

impl JobForm {
    /// The scene's own settings.
    pub fn from_scene(scene: &SceneInfo) -> Self {
        Self {
            frames: scene_frames(scene),
            output_dir: OutputPlan::for_scene(scene, None, None)
                .dir
                .display()
                .to_string(),
            resolution_percent: scene.resolution_percentage,
            samples: scene.samples,
            format: None,
            scene: None,
            warm_scene: true,
            overwrite: false,
        }
    }

    /// The frames the form names, or why it names none.
    pub fn parsed_frames(&self) -> Result<Vec<i32>, String> {
        let frames = parse_frames(self.frames.trim()).map_err(|err| err.to_string())?;
        if frames.is_empty() {
            return Err("the frame list names no frame".into());
        }
        Ok(frames)
    }

    /// The job to start, or what to fix first. Only the settings that differ
    /// from the scene's are sent as overrides; an output folder other than
    /// the scene's own holds the frames as `<blend name>_####`.
    pub fn to_spec(&self, scene: &SceneInfo) -> Result<JobSpec, String> {
        let frames = self.parsed_frames()?;
        let output_dir = self.output_dir.trim();
        if output_dir.is_empty() {
            return Err("choose an output folder".into());
        }
        let own_dir = OutputPlan::for_scene(scene, None, None).dir;
        let out = (own_dir != Path::new(output_dir)).then(|| PathBuf::from(output_dir));
        JobSpec::for_scene(
            scene,
            JobChoices {
                frames,
                out,
                format: self.format,
                resolution_percent: Some(self.resolution_percent),
                samples: self.samples,
                scene: self.scene.clone(),
                cold_scene: !self.warm_scene,
                overwrite: self.overwrite,
                in_order: false,
            },
        )
    }
}

fn yes() -> bool {
    true
}

/// The scene's frame range as a frame list: `1-24`, `1-24x2`, `5`.
pub fn scene_frames(scene: &SceneInfo) -> String {
    let (start, end, step) = (scene.frame_start, scene.frame_end, scene.frame_step.max(1));
    if start == end {
        start.to_string()
    } else if step == 1 {
        format!("{start}-{end}")
    } else {
        format!("{start}-{end}x{step}")
    }
}

/// Whether `path` names a .blend file (or a `.blend1` backup).
pub fn is_blend(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            let ext = ext.to_ascii_lowercase();
            ext == "blend"
                || ext
                    .strip_prefix("blend")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::Overrides;

    /// A scene as Blender would describe the demo.
    pub(crate) fn scene() -> SceneInfo {
        crate::controller::inspect::tests::scene_info()
    }

    #[test]
    fn the_form_starts_from_the_scene() {
        let form = JobForm::from_scene(&scene());
        assert_eq!(form.frames, "1-24");
        assert_eq!(form.output_dir, "/work/shots/demo_frames");
        assert_eq!(form.resolution_percent, 100);
        assert_eq!(form.samples, Some(16));
        assert_eq!(form.format, None);
    }

    #[test]
    fn an_untouched_form_overrides_nothing() {
        let spec = JobForm::from_scene(&scene()).to_spec(&scene()).unwrap();
        assert_eq!(spec.frames, (1..=24).collect::<Vec<_>>());
        assert_eq!(
            spec.overrides,
            Overrides {
                output_name: Some("demo_####".into()),
                ..Overrides::default()
            }
        );
        assert_eq!(
            spec.output.frame_path(3),
            Path::new("/work/shots/demo_frames/demo_0003.png")
        );
        assert_eq!(spec.expected_size, Some((320, 180)));
    }

    #[test]
    fn changed_fields_become_overrides() {
        let mut form = JobForm::from_scene(&scene());
        form.frames = "1-3,10".into();
        form.resolution_percent = 50;
        form.samples = Some(4);
        form.format = Some(ImageFormat::Jpeg);
        let spec = form.to_spec(&scene()).unwrap();
        assert_eq!(spec.frames, [1, 2, 3, 10]);
        assert_eq!(spec.overrides.resolution_percent, Some(50));
        assert_eq!(spec.overrides.samples, Some(4));
        assert_eq!(spec.overrides.format, Some(ImageFormat::Jpeg));
        assert_eq!(spec.output.format, "JPEG");
        assert_eq!(spec.expected_size, Some((160, 90)));
    }

    #[test]
    fn bad_fields_say_what_to_fix() {
        let mut form = JobForm::from_scene(&scene());
        form.frames = "1-x".into();
        assert!(
            form.to_spec(&scene())
                .unwrap_err()
                .contains("bad frame list")
        );
        let mut form = JobForm::from_scene(&scene());
        form.output_dir = " ".into();
        assert!(
            form.to_spec(&scene())
                .unwrap_err()
                .contains("output folder")
        );
        let mut form = JobForm::from_scene(&scene());
        form.resolution_percent = 0;
        assert!(
            form.to_spec(&scene())
                .unwrap_err()
                .contains("resolution_percent")
        );
    }

    #[test]
    fn scene_ranges_and_blend_names() {
        let mut s = scene();
        s.frame_step = 2;
        assert_eq!(scene_frames(&s), "1-24x2");
        s.frame_end = 1;
        assert_eq!(scene_frames(&s), "1");
        assert!(is_blend("a/b.blend".as_ref()));
        assert!(is_blend("a/B.BLEND1".as_ref()));
        assert!(!is_blend("a/b.png".as_ref()));
        assert!(!is_blend("a/blend".as_ref()));
    }
}
