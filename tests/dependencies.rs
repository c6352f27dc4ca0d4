//! Scenes that read files beside the .blend, rendered through herd with real
//! Blender on loopback (HERD_LOOPBACK_ONLY=1): a generated scene with a
//! texture in another folder, a linked library and an image sequence
//! (`tests/deps_scene.py`), missing files, a changed texture, hostile paths,
//! and the real scenes of `../shared/blend-corpus`. As root the node runs in
//! a mount namespace where the scene's folder is hidden, so it renders only
//! from what herd sent it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::NodeProcess;
use serde_json::Value;

/// A node that sees nothing of `hidden` when the tests run as root (else a
/// plain node, and the test says so).
fn node_without(hidden: &Path, test: &str) -> NodeProcess {
    if common::root_or_skip(&format!("{test} (hiding the scene from the node)")) {
        NodeProcess::start_hiding(hidden, &[])
    } else {
        NodeProcess::start(&[])
    }
}

/// Renders `frame` of `blend` with Blender alone, as the reference.
fn reference(blend: &Path, frame: i32, out: &Path, python: Option<&str>) -> PathBuf {
    let mut command = Command::new(common::blender());
    command.args(["-b", "-noaudio"]).arg(blend);
    if let Some(python) = python {
        command.args(["--python-expr", python]);
    }
    let status = command
        .arg("-o")
        .arg(out.join("ref_####"))
        .args(["-F", "PNG", "-f", &frame.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let path = out.join(format!("ref_{frame:04}.png"));
    assert!(
        status.success() && path.is_file(),
        "reference render of {}",
        blend.display()
    );
    path
}

/// Largest and mean difference of two images' channels, in 0..=255.
fn difference(a: &Path, b: &Path) -> (u8, f64) {
    let a = image::open(a).unwrap().to_rgba8();
    let b = image::open(b).unwrap().to_rgba8();
    assert_eq!(a.dimensions(), b.dimensions(), "same size");
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += u64::from(d);
    }
    (max, sum as f64 / a.as_raw().len() as f64)
}

/// Runs `herd render` of `blend` on `node` only; panics unless it exits 0.
fn render(blend: &Path, node: &NodeProcess, out: &Path, args: &[&str]) -> Vec<Value> {
    let work = tempfile::tempdir().unwrap();
    let mut all = vec!["--no-local"];
    all.extend_from_slice(args);
    let (ok, events) = common::render_file(blend, out, work.path(), &[&node.url], &all, |_| {});
    assert!(ok, "herd render failed: {events:?}");
    events
}

#[test]
fn a_scene_with_a_texture_a_library_and_a_sequence_renders_on_a_node_as_with_blender() {
    let dir = tempfile::tempdir().unwrap();
    let blend = common::deps_scene(dir.path(), false);
    let node = node_without(dir.path(), "scene files");
    let out = tempfile::tempdir().unwrap();
    render(&blend, &node, out.path(), &["--frames", "1-3"]);
    for frame in 1..=3 {
        let herd = out.path().join(format!("scene_{frame:04}.png"));
        let local = reference(&blend, frame, out.path(), None);
        let (max, mean) = difference(&herd, &local);
        assert!(
            max <= 2 && mean <= 0.05,
            "frame {frame} differs from Blender's own: max {max}, mean {mean}"
        );
    }
    // The sequence really changes the frames, and the texture and library
    // are there (no magenta, the red cube).
    let (max, _) = difference(
        &out.path().join("scene_0001.png"),
        &out.path().join("scene_0002.png"),
    );
    assert!(max > 50, "frames 1 and 2 show different sequence images");
    let frame = image::open(out.path().join("scene_0001.png"))
        .unwrap()
        .to_rgb8();
    let magenta = frame
        .pixels()
        .filter(|p| p[0] > 200 && p[1] < 50 && p[2] > 200)
        .count();
    assert_eq!(magenta, 0, "no missing-texture magenta");
}

#[test]
fn a_missing_texture_is_reported_before_the_job_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let blend = common::deps_scene(dir.path(), false);
    std::fs::remove_file(dir.path().join("textures/wood.png")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("render")
        .arg(&blend)
        .args([
            "--no-discovery",
            "--no-local",
            "--node",
            "http://127.0.0.1:9",
        ])
        .arg("--out")
        .arg(out.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("image 'wood.png' (//../textures/wood.png)"),
        "{stderr}"
    );
    assert!(stderr.contains("textures/wood.png"), "{stderr}");
    assert!(stderr.contains("--allow-missing"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing rendered"
    );

    let inspect = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("inspect")
        .arg(&blend)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("image 'wood.png' (//../textures/wood.png): MISSING 1 of 1"),
        "{text}"
    );

    // Told to go on, it renders (the texture magenta, as Blender does).
    let node = NodeProcess::start(&[]);
    let events = render(
        &blend,
        &node,
        out.path(),
        &["--frames", "1", "--allow-missing"],
    );
    assert!(out.path().join("scene_0001.png").is_file());
    // And the node said what it rendered without.
    assert!(
        common::log_lines(&events)
            .any(|line| line.contains("renders without files") && line.contains("'wood.png'")),
        "{events:?}"
    );
}

#[test]
fn a_second_job_sends_only_the_texture_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let blend = common::deps_scene(dir.path(), false);
    let node = NodeProcess::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received = || {
        runtime.block_on(node.info())["blob_bytes_received"]
            .as_u64()
            .unwrap()
    };

    let out = tempfile::tempdir().unwrap();
    render(&blend, &node, out.path(), &["--frames", "1"]);
    let first = received();
    let files: u64 = ["shot/scene.blend", "textures/wood.png", "lib/library.blend"]
        .iter()
        .map(|file| std::fs::metadata(dir.path().join(file)).unwrap().len())
        .sum();
    assert!(
        first > files,
        "the first job sends everything ({first} bytes)"
    );

    // The same job again sends nothing.
    let again = tempfile::tempdir().unwrap();
    render(&blend, &node, again.path(), &["--frames", "1"]);
    assert_eq!(received(), first, "nothing is sent twice");

    // A changed texture: only it (and the small manifest naming it) goes.
    let wood = dir.path().join("textures/wood.png");
    let mut texture = image::open(&wood).unwrap().to_rgba8();
    texture.put_pixel(0, 0, image::Rgba([0, 255, 0, 255]));
    texture.save(&wood).unwrap();
    let wood_bytes = std::fs::metadata(&wood).unwrap().len();
    let changed = tempfile::tempdir().unwrap();
    render(&blend, &node, changed.path(), &["--frames", "1"]);
    let sent = received() - first;
    assert!(
        sent >= wood_bytes && sent <= wood_bytes + 4096,
        "a changed {wood_bytes}-byte texture sent {sent} bytes"
    );
}

#[test]
fn paths_in_a_scene_cannot_reach_outside_the_nodes_work_dir() {
    let _ = std::fs::remove_dir_all("/tmp/herd-evil-output");
    let dir = tempfile::tempdir().unwrap();
    let blend = common::deps_scene(dir.path(), true);
    let node = NodeProcess::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A hostile controller: a manifest that climbs out is refused.
        let bytes = std::fs::read(&blend).unwrap();
        let blob = node.upload(bytes).await;
        for path in [
            "../../outside.png",
            "/etc/outside.png",
            "a/../../b",
            "a\\..\\b",
        ] {
            let manifest = serde_json::json!({"blend_path": "scene.blend", "files": [
                {"path": path, "blob": blob}
            ]});
            let manifest = node.upload(serde_json::to_vec(&manifest).unwrap()).await;
            let body = serde_json::json!({"blob": blob, "frame": 1, "manifest": manifest});
            let response = node
                .client
                .post(node.api("renders"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path}");
            let error: Value = response.json().await.unwrap();
            assert!(
                error["error"].as_str().unwrap().contains("unsafe path"),
                "{error}"
            );
        }

        // The scene itself: an image path that climbs to /etc/hostname and a
        // File Output node writing to /tmp. The render reads and writes
        // inside the job's folder only.
        let id = node.queue(&blob, 1, serde_json::json!({})).await;
        let status = node.wait_final(&id, Duration::from_secs(120)).await;
        assert_eq!(status["state"], "done", "{status}");
        let missing = status["missing_files"].to_string();
        assert!(
            missing.contains("image 'secret'"),
            "the climbing path stays a missing file: {status}"
        );
        // What the File Output node wrote is one of the render's outputs,
        // in the render's own folder on the node, for the controller to
        // place on its side.
        let outputs = status["outputs"].as_array().unwrap();
        assert!(
            outputs
                .iter()
                .any(|output| output.as_str().unwrap().starts_with("fo/0/")),
            "the File Output node's files are outputs of the render: {status}"
        );
    });
    assert!(
        !Path::new("/tmp/herd-evil-output").exists(),
        "nothing written where the scene said"
    );
    let written = walk(&node.work_dir.path().join("renders"))
        .into_iter()
        .any(|path| path.components().any(|part| part.as_os_str() == "fo"));
    assert!(
        written,
        "the File Output node wrote inside the node's work dir"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// A scene of the corpus and how to render it.
struct CorpusScene {
    /// Path under the corpus.
    file: &'static str,
    /// Files it reads that are missing (rendered with `--allow-missing`).
    missing: bool,
}

/// The corpus scenes this Blender renders (see the corpus's SOURCES.md):
/// textures, libraries in chains, Windows paths, UDIM tiles, a baked
/// particle cache, a packed image, a missing texture.
const CORPUS: &[CorpusScene] = &[
    CorpusScene {
        file: "gltf-clearcoat-textures/scenes/08_clearcoat.blend",
        missing: false,
    },
    CorpusScene {
        file: "gltf-anim-linked-lib/scenes/03_all_animations.blend",
        missing: true,
    },
    CorpusScene {
        file: "gltf-missing-texture/scenes/01_missing_textures.blend",
        missing: true,
    },
    CorpusScene {
        file: "gltf-eevee-driver-anim/scenes/12_anim_range_driver.blend",
        missing: false,
    },
    CorpusScene {
        file: "bat-gn-python-driver/geometry-nodes/file_to_pack.blend",
        missing: false,
    },
    CorpusScene {
        file: "bat-udim-zstd/udim/v01_UDIM_BAT_debugging.blend",
        missing: false,
    },
    CorpusScene {
        file: "bat-particle-cache/T55539-particles/particle.blend",
        missing: false,
    },
    CorpusScene {
        file: "blenderproc-packed-image/examples/advanced/lens_distortion/callab_platte.blend",
        missing: false,
    },
    CorpusScene {
        file: "luxcore-engine-missing/tests/full_export/full_export.test.blend",
        missing: true,
    },
];

/// Where the corpus is: `HERD_CORPUS`, else `../shared/blend-corpus` beside
/// the repository.
fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("HERD_CORPUS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/blend-corpus"),
        PathBuf::from,
    );
    dir.join("SOURCES.md").is_file().then_some(dir)
}

#[test]
fn the_corpus_scenes_render_through_herd_as_with_blender() {
    let Some(corpus) = corpus() else {
        eprintln!(
            "SKIPPED the corpus test: no blend corpus at ../shared/blend-corpus (set HERD_CORPUS)"
        );
        return;
    };
    let corpus = corpus.canonicalize().unwrap();
    let node = node_without(&corpus, "corpus");
    // Small and few samples: the comparison is of what is read, not of
    // quality. Blender gets the same settings as the node.
    let python = "import bpy; s=bpy.context.scene; s.render.resolution_percentage=10; \
                  s.cycles.samples=4; s.eevee.taa_render_samples=4";
    let mut failures = Vec::new();
    for scene in CORPUS {
        let blend = corpus.join(scene.file);
        let out = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--frames",
            "1",
            "--resolution-percent",
            "10",
            "--samples",
            "4",
        ];
        if scene.missing {
            args.push("--allow-missing");
        }
        let work = tempfile::tempdir().unwrap();
        let mut all = vec!["--no-local"];
        all.extend_from_slice(&args);
        let (ok, events) =
            common::render_file(&blend, out.path(), work.path(), &[&node.url], &all, |_| {});
        if !ok {
            failures.push(format!(
                "{}: herd render failed: {:?}",
                scene.file,
                common::finished(&events)
            ));
            continue;
        }
        let stem = blend.file_stem().unwrap().to_string_lossy().into_owned();
        let herd = out.path().join(format!("{stem}_0001.png"));
        let local = reference(&blend, 1, out.path(), Some(python));
        let (max, mean) = difference(&herd, &local);
        eprintln!("{}: max {max}, mean {mean:.4}", scene.file);
        if max > 8 || mean > 0.1 {
            failures.push(format!(
                "{}: differs from Blender's own (max {max}, mean {mean:.4})",
                scene.file
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
