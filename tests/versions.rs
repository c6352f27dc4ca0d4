//! The version matrix: smoke tests of herd on each Blender named in
//! `HERD_TEST_BLENDERS` (`4.2=/path,4.5=/path,5.0=/path`), besides the full
//! suite, which runs on the default Blender (Debian's 3.4.1). `scripts/bpy-venvs.sh`
//! makes such Blenders from PyPI's `bpy` wheels and prints the value; `.ci/run`
//! sets it. Unset, each test says on stderr why it is skipped.
//!
//! For each Blender: `herd inspect`, a node's frame pixel-identical to that
//! Blender's own `-b -f` render, a whole `herd render` job, and the corpus
//! scenes it can open; across them: one job on nodes with different
//! Blenders, and a 5.x file that a 4.5 node renders and a 4.2 node is left
//! out of, with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{NodeProcess, TestBlender, demo_blend};
use herd::controller::inspect::{BlendVersion, inspect};
use serde_json::{Value, json};

const FRAME_LIMIT: Duration = Duration::from_secs(300);

fn pngs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "png"))
        .collect();
    found.sort();
    found
}

/// A whole `herd render` job of `blend` on this machine only, with
/// `blender` inspecting and rendering.
fn local_job(blender: &TestBlender, blend: &Path, out: &Path, args: &[&str]) -> (bool, Vec<Value>) {
    let work = tempfile::tempdir().unwrap();
    let mut all = vec!["--blender", blender.arg()];
    all.extend_from_slice(args);
    common::render_file(blend, out, work.path(), &[], &all, |_| {})
}

#[tokio::test]
async fn inspect_the_demo_on_each_blender() {
    for blender in common::test_blenders("inspect_the_demo_on_each_blender") {
        let info = inspect(&blender.path, &demo_blend())
            .await
            .unwrap_or_else(|err| panic!("Blender {}: {err:#}", blender.label));
        assert!(
            info.blender_version.starts_with(&blender.label),
            "{} reports {}",
            blender.label,
            info.blender_version
        );
        assert_eq!((info.frame_start, info.frame_end), (1, 24));
        assert_eq!(info.engine, "CYCLES");
        assert_eq!(info.samples, Some(16));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }
}

#[tokio::test]
async fn a_node_renders_what_that_blender_renders_itself() {
    for blender in common::test_blenders("a_node_renders_what_that_blender_renders_itself") {
        let node = NodeProcess::start(&["--blender", blender.arg()]);
        assert!(
            node.info().await["blender_version"]
                .as_str()
                .unwrap()
                .starts_with(&blender.label)
        );
        let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
        let id = node.queue(&hash, 7, json!({})).await;
        let status = node.wait_final(&id, FRAME_LIMIT).await;
        assert_eq!(status["state"], "done", "{}: {status}", blender.label);
        let (code, png) = node.bytes(&format!("renders/{id}/image")).await;
        assert_eq!(code, 200);
        drop(node);

        let native = tempfile::tempdir().unwrap();
        let status = Command::new(&blender.path)
            .args(["-b", "-noaudio"])
            .arg(demo_blend())
            .arg("-o")
            .arg(native.path().join("native_####"))
            .args(["-F", "PNG", "-f", "7"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{}: native render failed", blender.label);
        let own = image::open(native.path().join("native_0007.png"))
            .unwrap()
            .to_rgba8();
        let herds = image::load_from_memory(&png).unwrap().to_rgba8();
        assert_eq!(own.dimensions(), (320, 180));
        assert!(
            own == herds,
            "Blender {}: the node's frame 7 differs from Blender's own render",
            blender.label
        );
    }
}

#[tokio::test]
async fn progress_is_reported_on_each_blender() {
    // Blender 5.0 no longer prints its statistics lines; the worker's
    // render_stats handler sends them instead.
    for blender in common::test_blenders("progress_is_reported_on_each_blender") {
        let node = NodeProcess::start(&["--blender", blender.arg(), "--threads", "1"]);
        let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
        let id = node.queue(&hash, 1, json!({"samples": 100})).await;
        let seen = node
            .wait_until(&id, FRAME_LIMIT, |status| {
                matches!(
                    status["state"].as_str(),
                    Some("done" | "failed" | "cancelled")
                ) || status["progress"].as_f64().is_some_and(|p| p > 0.0)
            })
            .await;
        assert_eq!(
            seen["state"], "rendering",
            "Blender {}: {seen}",
            blender.label
        );
        let status = node.wait_final(&id, FRAME_LIMIT).await;
        assert_eq!(
            status["state"], "done",
            "Blender {}: {status}",
            blender.label
        );
    }
}

#[test]
fn a_whole_job_on_each_blender() {
    for blender in common::test_blenders("a_whole_job_on_each_blender") {
        let out = tempfile::tempdir().unwrap();
        let (success, events) =
            local_job(&blender, &demo_blend(), out.path(), &["--frames", "1-3"]);
        assert!(success, "Blender {}: {events:?}", blender.label);
        assert_eq!(pngs(out.path()).len(), 3, "Blender {}", blender.label);
        for path in pngs(out.path()) {
            assert_eq!(
                image::open(&path).unwrap().to_rgba8().dimensions(),
                (320, 180)
            );
        }
    }
}

#[test]
fn a_job_across_nodes_with_different_blenders() {
    let blenders = common::test_blenders("a_job_across_nodes_with_different_blenders");
    if blenders.is_empty() {
        return;
    }
    // The default Blender (the full suite's) and every other one.
    let mut nodes = vec![NodeProcess::start(&["--name", "default", "--threads", "1"])];
    for blender in &blenders {
        nodes.push(NodeProcess::start(&[
            "--name",
            &blender.label,
            "--blender",
            blender.arg(),
            "--threads",
            "1",
        ]));
    }
    let urls: Vec<&str> = nodes.iter().map(|node| node.url.as_str()).collect();
    let frames = format!("1-{}", 2 * nodes.len());
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (success, events) = common::render(
        out.path(),
        work.path(),
        &urls,
        &["--frames", &frames, "--no-local"],
        |_| {},
    );
    assert!(success, "{events:?}");
    assert_eq!(pngs(out.path()).len(), 2 * nodes.len());
    let summary = common::finished(&events);
    for node in summary["nodes"].as_array().unwrap() {
        assert!(
            node["frames"].as_u64().unwrap() > 0,
            "node {} rendered nothing: {summary}",
            node["name"]
        );
    }
}

#[test]
fn a_5x_file_renders_on_4_5_and_is_refused_on_4_2() {
    let test = "a_5x_file_renders_on_4_5_and_is_refused_on_4_2";
    let blenders = common::test_blenders(test);
    let (Some(old), Some(reads_5x), Some(corpus)) = (
        common::find_blender(&blenders, test, "4.2"),
        common::find_blender(&blenders, test, "4.5"),
        common::corpus(test),
    ) else {
        return;
    };
    // Saved by Blender 5.2, in the 5.x file format.
    let blend = corpus.join("gltf-b50-workbench/scenes/37_lamp_Workbench.blend");
    let refusing = NodeProcess::start(&["--name", "old", "--blender", old.arg()]);
    let rendering = NodeProcess::start(&["--name", "new", "--blender", reads_5x.arg()]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (success, events) = common::render_file(
        &blend,
        out.path(),
        work.path(),
        &[&refusing.url, &rendering.url],
        &[
            "--frames",
            "1-2",
            "--no-local",
            "--resolution-percent",
            "5",
            "--blender",
            reads_5x.arg(),
        ],
        |_| {},
    );
    assert!(success, "{events:?}");
    assert_eq!(pngs(out.path()).len(), 2);
    let reason = common::log_lines(&events)
        .any(|line| line.contains("old") && line.contains("only Blender 4.5 and later can read"));
    assert!(reason, "the 4.2 node's refusal is explained: {events:?}");
    for node in common::finished(&events)["nodes"].as_array().unwrap() {
        let expected = if node["name"] == "old" { 0 } else { 2 };
        assert_eq!(node["frames"], expected, "{node}");
    }
}

/// Corpus scenes, each with the first Blender that opens it.
const CORPUS: &[(&str, BlendVersion)] = &[
    // Cycles, 2.81, four textures beside it.
    (
        "gltf-clearcoat-textures/scenes/08_clearcoat.blend",
        BlendVersion { major: 2, minor: 0 },
    ),
    // Libraries linking libraries, 2.93.
    (
        "bat-gn-python-driver/geometry-nodes/file_to_pack.blend",
        BlendVersion { major: 2, minor: 0 },
    ),
    // Saved by 4.0 (Blender 3.4 segfaults on it).
    (
        "gltf-b40-crash/scenes/01_factors.blend",
        BlendVersion { major: 4, minor: 0 },
    ),
    // EEVEE (BLENDER_EEVEE in 3.2, BLENDER_EEVEE_NEXT in 4.2 to 4.5, and
    // BLENDER_EEVEE again in 5.0), zstd, UDIM tiles.
    (
        "bat-udim-zstd/udim/v01_UDIM_BAT_debugging.blend",
        BlendVersion { major: 2, minor: 0 },
    ),
    // Saved by 5.2 in the 5.x file format: 4.5 and later.
    (
        "gltf-b50-workbench/scenes/37_lamp_Workbench.blend",
        BlendVersion { major: 4, minor: 5 },
    ),
];

/// Frame 1 of `blend` as `blender -b -f 1` renders it with the settings the
/// corpus test gives herd (5 %, one sample), as a PNG in `dir`.
fn native_frame(blender: &TestBlender, blend: &Path, dir: &Path) -> PathBuf {
    let settings = "import bpy; s = bpy.context.scene; \
        s.render.resolution_percentage = 5; s.cycles.samples = 1; \
        s.eevee.taa_render_samples = 1";
    let output = Command::new(&blender.path)
        .arg("-b")
        .arg(blend)
        .args(["--python-expr", settings])
        .arg("-o")
        .arg(dir.join("f_####"))
        .args(["-F", "PNG", "-f", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let frames = pngs(dir);
    assert!(
        output.status.success() && frames.len() == 1,
        "Blender {} alone on {}: {}",
        blender.label,
        blend.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    frames[0].clone()
}

#[test]
fn corpus_scenes_on_each_blender_that_opens_them() {
    let test = "corpus_scenes_on_each_blender_that_opens_them";
    let Some(corpus) = common::corpus(test) else {
        return;
    };
    for blender in common::test_blenders(test) {
        let version = BlendVersion::parse_blender(&blender.label).unwrap();
        for (file, opens_from) in CORPUS {
            if version < *opens_from {
                continue;
            }
            let out = tempfile::tempdir().unwrap();
            let (success, events) = local_job(
                &blender,
                &corpus.join(file),
                out.path(),
                &[
                    "--frames",
                    "1",
                    "--resolution-percent",
                    "5",
                    "--samples",
                    "1",
                ],
            );
            assert!(success, "Blender {} on {file}: {events:?}", blender.label);
            let frames = pngs(out.path());
            assert_eq!(frames.len(), 1, "Blender {} on {file}", blender.label);
            // The same frame as the same Blender renders it alone.
            let native = tempfile::tempdir().unwrap();
            let alone = native_frame(&blender, &corpus.join(file), native.path());
            let herd = image::open(&frames[0]).unwrap().to_rgba16();
            let alone = image::open(&alone).unwrap().to_rgba16();
            assert_eq!(
                herd.dimensions(),
                alone.dimensions(),
                "Blender {} on {file}",
                blender.label
            );
            assert!(
                herd == alone,
                "Blender {} on {file}: herd's frame differs from Blender's own",
                blender.label
            );
        }
    }
}
