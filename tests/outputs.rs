//! What herd brings back is what Blender writes: for generated scenes (a
//! File Output node with passes in `//`, relative and absolute folders;
//! multilayer EXR with two view layers; 16-bit PNG; TIFF; a `###` pattern in
//! a sub-folder; a second scene picked with `--scene`) the tree `herd render`
//! writes equals the tree `blender -b FILE -a` writes, file by file: the same
//! names in the same places, the same size, channels and pixels. Real
//! Blender; the local node on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// Builds the test scene `kind` as `dir/scene.blend` (see outputs_scene.py);
/// `absolute` is the folder of the absolute File Output node.
fn make_scene(dir: &Path, kind: &str, absolute: &Path) -> PathBuf {
    make_scene_with(&common::blender(), dir, kind, absolute)
}

/// [`make_scene`] with the Blender at `blender`.
fn make_scene_with(blender: &Path, dir: &Path, kind: &str, absolute: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let blend = dir.join("scene.blend");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/outputs_scene.py");
    let status = Command::new(blender)
        .args([
            "-b",
            "--factory-startup",
            "--python-exit-code",
            "1",
            "--python",
        ])
        .arg(&script)
        .arg("--")
        .arg(&blend)
        .arg(kind)
        .arg(absolute.join("far_"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "building the {kind} scene failed");
    blend
}

/// `blender -b FILE [-S SCENE] -a` in the file's folder.
fn blender_writes(blend: &Path, scene: Option<&str>) {
    blender_writes_with(&common::blender(), blend, scene);
}

/// [`blender_writes`] with the Blender at `blender`.
fn blender_writes_with(blender: &Path, blend: &Path, scene: Option<&str>) {
    let mut command = Command::new(blender);
    command.arg("-b").arg(blend);
    if let Some(scene) = scene {
        command.args(["-S", scene]);
    }
    let output = command
        .arg("-a")
        .current_dir(blend.parent().unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "Blender failed: {output:?}");
}

/// `herd render --json` with the local node only; returns its JSON events.
fn herd_writes(blend: &Path, work: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(HERD)
        .arg("render")
        .arg(blend)
        .args(["--no-discovery", "--json", "--work-dir"])
        .arg(work)
        .args(args)
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        output.status.success(),
        "herd render failed: {}\n{events:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    events
}

/// Every file under `root` but the .blend and herd's journal, by relative path.
fn tree(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".blend") || name.starts_with(".herd-journal") {
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.insert(relative, path);
        }
    }
    files
}

/// An EXR's layers and channels with their samples (as f32), and its size.
type ExrContent = (
    Vec<(Option<String>, Vec<(String, Vec<f32>)>)>,
    (usize, usize),
);

fn exr_content(path: &Path) -> ExrContent {
    use exr::prelude::*;
    let image = read()
        .no_deep_data()
        .largest_resolution_level()
        .all_channels()
        .all_layers()
        .all_attributes()
        .from_file(path)
        .unwrap();
    let mut size = (0, 0);
    let layers = image
        .layer_data
        .iter()
        .map(|layer| {
            size = (layer.size.0, layer.size.1);
            let channels = layer
                .channel_data
                .list
                .iter()
                .map(|channel| {
                    let samples = channel.sample_data.values_as_f32().collect::<Vec<f32>>();
                    (channel.name.to_string(), samples)
                })
                .collect();
            (
                layer
                    .attributes
                    .layer_name
                    .as_ref()
                    .map(ToString::to_string),
                channels,
            )
        })
        .collect();
    (layers, size)
}

/// Asserts `ours` holds what `theirs` holds: EXR channels and samples, or
/// decoded pixels of other images (with their colour type).
fn assert_same_file(ours: &Path, theirs: &Path) {
    let ext = theirs
        .extension()
        .unwrap()
        .to_string_lossy()
        .to_ascii_lowercase();
    if ext == "exr" {
        let (a, b) = (exr_content(ours), exr_content(theirs));
        let names = |content: &ExrContent| -> Vec<String> {
            content
                .0
                .iter()
                .flat_map(|(layer, channels)| {
                    channels.iter().map(move |(name, _)| {
                        format!("{}{name}", layer.clone().unwrap_or_default())
                    })
                })
                .collect()
        };
        assert_eq!(names(&a), names(&b), "{}: channels differ", ours.display());
        assert_eq!(a.1, b.1, "{}: size differs", ours.display());
        assert!(a == b, "{}: samples differ from Blender's", ours.display());
    } else {
        let a = image::open(ours).unwrap();
        let b = image::open(theirs).unwrap();
        assert_eq!(
            a.color(),
            b.color(),
            "{}: colour type differs",
            ours.display()
        );
        assert_eq!(
            (a.width(), a.height()),
            (b.width(), b.height()),
            "{}: size differs",
            ours.display()
        );
        assert!(
            a.as_bytes() == b.as_bytes(),
            "{}: pixels differ from Blender's",
            ours.display()
        );
    }
}

/// Renders scene `kind` with Blender and with herd, each in its own folder,
/// and compares what each wrote (in the folder and in the absolute one).
fn compare(kind: &str, herd_args: &[&str], scene: Option<&str>) {
    compare_on(&common::blender(), kind, herd_args, scene);
}

/// [`compare`] with the Blender at `blender`, for herd and Blender alike.
fn compare_on(blender: &Path, kind: &str, herd_args: &[&str], scene: Option<&str>) {
    let root = tempfile::tempdir().unwrap();
    let (theirs, ours) = (root.path().join("blender"), root.path().join("herd"));
    let (theirs_abs, ours_abs) = (
        root.path().join("blender_abs"),
        root.path().join("herd_abs"),
    );
    let native = make_scene_with(blender, &theirs, kind, &theirs_abs);
    let blend = make_scene_with(blender, &ours, kind, &ours_abs);
    blender_writes_with(blender, &native, scene);
    let blender_arg = blender.to_string_lossy().into_owned();
    let mut args = vec!["--blender", blender_arg.as_str()];
    args.extend_from_slice(herd_args);
    herd_writes(&blend, &root.path().join("work"), &args);
    for (ours, theirs) in [(&ours, &theirs), (&ours_abs, &theirs_abs)] {
        let (a, b) = (tree(ours), tree(theirs));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{kind}: herd wrote other files than Blender"
        );
        for (name, path) in &a {
            assert_same_file(path, &b[name]);
        }
    }
    assert!(!tree(&ours).is_empty(), "{kind}: nothing written");
}

/// Decodes `movie` into PNG frames in `out` with Blender's sequencer (the
/// same decoder for both movies compared).
fn decode_movie(movie: &Path, out: &Path) -> BTreeMap<String, PathBuf> {
    let script = format!(
        r#"
import bpy
scene = bpy.context.scene
editor = scene.sequence_editor_create()
strips = editor.strips if hasattr(editor, "strips") else editor.sequences
strip = strips.new_movie("movie", {movie:?}, channel=1, frame_start=1)
scene.frame_start = 1
scene.frame_end = strip.frame_final_duration
element = strip.elements[0]
scene.render.resolution_x = element.orig_width
scene.render.resolution_y = element.orig_height
scene.render.resolution_percentage = 100
scene.view_settings.view_transform = "Standard"
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = {target:?}
bpy.ops.render.render(animation=True)
"#,
        movie = movie.to_string_lossy(),
        target = format!("{}/f_", out.display()),
    );
    let status = Command::new(common::blender())
        .args(["-b", "--factory-startup", "--python-expr", &script])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "decoding {} failed", movie.display());
    tree(out)
}

/// A movie scene: herd renders PNG frames and then encodes the movie with
/// the scene's settings; decoded, it is frame for frame Blender's own.
fn compare_movie(kind: &str) {
    let root = tempfile::tempdir().unwrap();
    let (theirs, ours) = (root.path().join("blender"), root.path().join("herd"));
    let native = make_scene(&theirs, kind, &root.path().join("abs"));
    let blend = make_scene(&ours, kind, &root.path().join("abs"));
    blender_writes(&native, None);
    let events = herd_writes(&blend, &root.path().join("work"), &[]);
    let encoded = events
        .iter()
        .find(|event| event["event"] == "encoded")
        .unwrap_or_else(|| panic!("no movie: {events:#?}"));
    let said = common::log_lines(&events).any(|line| line.contains("movie"));
    assert!(said, "the job did not say it encodes a movie: {events:#?}");
    let name = if kind == "movie_mp4" {
        "movie/shot_0001-0003.mp4"
    } else {
        "movie/shot_0001-0003.mkv"
    };
    let movie = ours.join(name);
    assert_eq!(encoded["path"], movie.to_string_lossy().as_ref());
    assert!(theirs.join(name).is_file());
    let (a, b) = (
        decode_movie(&movie, &root.path().join("ours")),
        decode_movie(&theirs.join(name), &root.path().join("theirs")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(
        a.len() >= 3,
        "every frame in the movie (ffprobe counts them below)"
    );
    for (name, path) in &a {
        assert_same_file(path, &b[name]);
    }
    // The PNG intermediates stay for a resumed job or a new encode.
    assert_eq!(tree(&ours.join("scene_frames")).len(), 3);
    let streams = probe(&movie);
    let video = streams
        .iter()
        .find(|stream| stream["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(video["nb_read_frames"], "3", "{streams:#?}");
    assert_eq!(video["r_frame_rate"], "24/1", "{streams:#?}");
    let audio = streams.iter().any(|stream| stream["codec_type"] == "audio");
    let native_audio = probe(&theirs.join(name))
        .iter()
        .any(|stream| stream["codec_type"] == "audio");
    assert_eq!(audio, native_audio, "audio as in Blender's movie");
    assert_eq!(
        audio,
        kind == "sequencer_movie",
        "audio where the scene has sound"
    );

    // Run again: nothing is rendered, the movie is encoded again.
    std::fs::remove_file(&movie).unwrap();
    let events = herd_writes(&blend, &root.path().join("work"), &[]);
    let started = events
        .iter()
        .find(|event| event["event"] == "started")
        .unwrap();
    assert_eq!(started["skipped"], 3, "{events:#?}");
    assert!(movie.is_file(), "encoded again from the kept frames");
}

/// ffprobe's view of a movie's streams, every frame counted.
fn probe(movie: &Path) -> Vec<serde_json::Value> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_type,nb_read_frames,r_frame_rate")
        .args(["-of", "json"])
        .arg(movie)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe failed on {}",
        movie.display()
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    answer["streams"].as_array().unwrap().clone()
}

#[test]
fn a_movie_scene_ends_as_the_movie_blender_writes() {
    compare_movie("movie");
}

#[test]
fn an_mp4_movie_scene_ends_as_blenders_movie() {
    compare_movie("movie_mp4");
}

#[test]
fn a_sequencer_only_movie_scene_with_sound_ends_as_blenders_movie() {
    compare_movie("sequencer_movie");
}

/// An unbaked rigid body rendered over two nodes (each jumping to its
/// frames) equals Blender stepping the frames in order: herd bakes it first.
#[test]
fn an_unbaked_simulation_renders_as_blender_plays_it() {
    let events = simulation_over_two_nodes(&[]);
    assert!(
        events.iter().any(|event| event["event"] == "baking"),
        "no baking step: {events:#?}"
    );
}

/// The same with `--in-order` (what herd does by itself for simulations it
/// cannot bake): no bake, the frames go in order to one node, which steps
/// them from the scene's start.
#[test]
fn frames_in_order_on_one_node_render_as_blender_plays_them() {
    let events = simulation_over_two_nodes(&["--in-order"]);
    assert!(
        !events.iter().any(|event| event["event"] == "baking"),
        "baked: {events:#?}"
    );
    let said = common::log_lines(&events).any(|line| line.contains("in order on one node"));
    assert!(said, "no word of the order: {events:#?}");
    let summary = events
        .iter()
        .find(|event| event["event"] == "finished")
        .unwrap();
    let busy = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["frames"].as_u64() > Some(0))
        .count();
    assert_eq!(busy, 1, "one node rendered every frame: {summary}");
}

/// Renders the rigid-body drop with herd over two nodes (with `args`) and
/// with Blender stepping the frames, and compares every frame; returns
/// herd's events.
fn simulation_over_two_nodes(extra: &[&str]) -> Vec<serde_json::Value> {
    let root = tempfile::tempdir().unwrap();
    let (theirs, ours) = (root.path().join("blender"), root.path().join("herd"));
    let native = make_scene(&theirs, "rigid_body", &root.path().join("abs"));
    let blend = make_scene(&ours, "rigid_body", &root.path().join("abs"));
    let stepped = r#"
import bpy
scene = bpy.context.scene
for frame in range(scene.frame_start, scene.frame_end + 1):
    scene.frame_set(frame)
    scene.render.filepath = bpy.path.abspath(f"//out/frame_{frame:04d}")
    bpy.ops.render.render(write_still=True)
"#;
    let status = Command::new(common::blender())
        .arg("-b")
        .arg(&native)
        .args(["--python-expr", stepped])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let nodes = [
        common::NodeProcess::start(&[]),
        common::NodeProcess::start(&[]),
    ];
    let mut args = vec!["--no-local".to_string()];
    for node in &nodes {
        args.extend(["--node".to_string(), format!("http://{}", node.addr())]);
    }
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let events = herd_writes(&blend, &root.path().join("work"), &args);
    let (a, b) = (tree(&ours.join("out")), tree(&theirs.join("out")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a.len(), 12);
    for (name, path) in &a {
        assert_same_file(path, &b[name]);
    }
    // Not stepped, the cube would not have fallen: the frames differ.
    let first = image::open(&a["frame_0001.png"]).unwrap();
    let last = image::open(&a["frame_0012.png"]).unwrap();
    assert!(first.as_bytes() != last.as_bytes(), "the cube fell");
    events
}

#[test]
fn file_output_nodes_write_every_pass_where_blender_does() {
    compare("file_output", &[], None);
}

/// The version matrix's smoke set (HERD_TEST_BLENDERS): a File Output scene
/// and a multilayer EXR come back as that Blender writes them, and warm
/// scenes (deformation, geometry nodes) render as that Blender's `-a`.
#[test]
fn outputs_and_warm_scenes_on_each_blender() {
    for blender in common::test_blenders("outputs_and_warm_scenes_on_each_blender") {
        eprintln!("Blender {}", blender.label);
        for kind in ["file_output", "multilayer", "warm_deform", "warm_geonodes"] {
            compare_on(&blender.path, kind, &[], None);
        }
    }
}

#[test]
fn multilayer_exr_keeps_every_view_layer_and_pass() {
    compare("multilayer", &[], None);
}

#[test]
fn sixteen_bit_png_stays_sixteen_bit() {
    compare("png16", &[], None);
}

#[test]
fn tiff_comes_back_as_tiff() {
    compare("tiff", &[], None);
}

#[test]
fn an_output_pattern_with_hashes_in_a_sub_folder() {
    compare("pattern", &[], None);
}

#[test]
fn the_scene_picked_with_scene_is_rendered() {
    compare("two_scenes", &["--scene", "Other"], Some("Other"));
}

#[test]
fn the_untouched_default_path_falls_back_beside_the_blend_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shot");
    let blend = make_scene(&dir, "default", &root.path().join("abs"));
    let events = herd_writes(&blend, &root.path().join("work"), &["--frames", "1"]);
    let said = common::log_lines(&events)
        .any(|line| line.contains("/tmp/") && line.contains("scene_frames"));
    assert!(said, "no word of the fallback: {events:#?}");
    let written: Vec<String> = tree(&dir).into_keys().collect();
    assert_eq!(written, ["scene_frames/scene_0001.png"]);
}

#[test]
fn out_still_overrides_the_scene_path() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shot");
    let blend = make_scene(&dir, "pattern", &root.path().join("abs"));
    let out = root.path().join("chosen");
    let out_text = out.to_string_lossy().into_owned();
    herd_writes(
        &blend,
        &root.path().join("work"),
        &["--frames", "2", "--out", &out_text],
    );
    let written: Vec<String> = tree(&out).into_keys().collect();
    assert_eq!(written, ["scene_0002.jpg"]);
    assert!(!dir.join("renders").exists());
}

/// herd keeps a Cycles scene warm between frames (persistent data) where
/// `blender -b -a` rebuilds it for every frame: every frame must still be
/// Blender's, whatever changes from frame to frame.
mod warm_scene {
    use super::compare;
    use std::time::Duration;

    /// A node whose Blender may hold next to nothing does not keep the scene
    /// warm, and says so in the frame's notes; a node with room does.
    #[test]
    fn a_node_short_of_memory_renders_cold_and_says_so() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for (budget, cold) in [("1", true), ("1000000000000", false)] {
            let node = crate::common::NodeProcess::start_with_env(
                &[],
                &[("HERD_MEMORY_BUDGET_BYTES", budget)],
            );
            runtime.block_on(async {
                let blend = std::fs::read(crate::common::demo_blend()).unwrap();
                let blob = node.upload(blend).await;
                let id = node.queue(&blob, 1, serde_json::json!({})).await;
                let status = node.wait_final(&id, Duration::from_secs(120)).await;
                assert_eq!(status["state"], "done", "{status}");
                let notes = status["notes"].to_string();
                assert_eq!(
                    notes.contains("not kept warm"),
                    cold,
                    "budget {budget}: {status}"
                );
            });
        }
    }

    #[test]
    fn deformation_by_armature_shape_keys_and_modifiers() {
        compare("warm_deform", &[], None);
    }

    #[test]
    fn geometry_nodes_animated_by_time() {
        compare("warm_geonodes", &[], None);
    }

    #[test]
    fn particles_unbaked() {
        compare("warm_particles", &[], None);
    }

    #[test]
    fn hair() {
        compare("warm_hair", &[], None);
    }

    #[test]
    fn instances_and_an_animated_array() {
        compare("warm_instancing", &[], None);
    }

    #[test]
    fn motion_blur() {
        compare("warm_motion_blur", &[], None);
    }

    #[test]
    fn animated_materials_and_lights() {
        compare("warm_material", &[], None);
    }

    #[test]
    fn an_image_sequence_as_texture() {
        compare("warm_image_sequence", &[], None);
    }

    #[test]
    fn several_view_layers() {
        compare("warm_view_layers", &[], None);
    }
}
