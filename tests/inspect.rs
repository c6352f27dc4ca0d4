//! Tests of `herd inspect` and `herd::controller::inspect`: .blend headers
//! (plain, gzip, zstd, Blender 5's new layout) on small files written here,
//! the version check, and the real `herd inspect` binary with the real
//! Blender on the demo scene and on the shared corpus of other people's files
//! (`../shared/blend-corpus`, skipped with a message when it is absent).
//! A fake Blender (a shell script) stands in where the test is about herd's
//! side only: refusing a file before Blender starts, and a Blender crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use herd::controller::inspect::{
    BlendVersion, Compression, InspectError, SceneInfo, check_compatible, is_newer, read_header,
};

fn demo_blend() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/demo.blend")
}

/// The shared corpus, or `None` after saying why `test` is skipped.
fn corpus(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/blend-corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED {test}: ../shared/blend-corpus not found");
        None
    }
}

fn version(major: u32, minor: u32) -> BlendVersion {
    BlendVersion { major, minor }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The start of a plausible .blend: header, then the first block code.
fn blend_bytes(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"REND\x48\x00\x00\x00");
    bytes.extend(std::iter::repeat_n(0_u8, 200));
    bytes
}

fn herd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .env("HERD_LOG", "herd=warn")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `herd inspect --json FILE` and parses its answer.
fn inspect_json(file: &Path) -> SceneInfo {
    let output = herd(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "herd inspect {} failed: {}",
        file.display(),
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `herd inspect FILE`, expects it to fail, and returns its message.
fn inspect_error(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["inspect", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = herd(&args);
    assert!(
        !output.status.success(),
        "herd inspect {} should fail; printed {}",
        file.display(),
        String::from_utf8_lossy(&output.stdout)
    );
    let message = stderr(&output);
    assert!(message.starts_with("herd: "), "{message}");
    message
}

/// A shell script that says it is Blender 3.4.1 and dies of SIGSEGV when
/// asked to open anything, as Blender 3.4 does on 4.x files.
#[cfg(unix)]
fn crashing_blender(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-blender");
    {
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(
            b"#!/bin/sh\n\
              if [ \"$1\" = --version ]; then echo 'Blender 3.4.1'; exit 0; fi\n\
              echo \"Read blend: $5\"\n\
              kill -SEGV $$\n",
        )
        .unwrap();
        file.sync_all().unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Like [`inspect_error`], retrying while another test's fork still holds the
/// freshly written fake Blender open ("Text file busy").
#[cfg(unix)]
fn inspect_error_with(blender: &Path, file: &Path) -> String {
    for _ in 0..5 {
        let message = inspect_error(file, &["--blender", blender.to_str().unwrap()]);
        if !message.contains("Text file busy") {
            return message;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the fake Blender stayed busy");
}

// --- headers, no Blender ---

#[test]
fn header_of_plain_files_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let header = read_header(&write_file(
        dir.path(),
        "a.blend",
        &blend_bytes(b"BLENDER-v304"),
    ))
    .unwrap();
    assert_eq!(header.version, version(3, 4));
    assert_eq!(header.compression, Compression::None);
    assert_eq!(header.pointer_size_bytes, 8);
    assert!(!header.big_endian);

    // A PowerPC Mac's 2.79 backup: 4-byte pointers, big-endian.
    let header = read_header(&write_file(
        dir.path(),
        "old.blend1",
        &blend_bytes(b"BLENDER_V279"),
    ))
    .unwrap();
    assert_eq!(header.version, version(2, 79));
    assert_eq!(header.pointer_size_bytes, 4);
    assert!(header.big_endian);

    let header = read_header(&write_file(
        dir.path(),
        "five.blend",
        &blend_bytes(b"BLENDER17-01v0502"),
    ))
    .unwrap();
    assert_eq!(header.version, version(5, 2));
    assert_eq!(header.pointer_size_bytes, 8);
}

#[test]
fn versions_print_as_blender_names_them() {
    assert_eq!(version(3, 4).to_string(), "3.4");
    assert_eq!(version(2, 79).to_string(), "2.79");
    assert_eq!(version(5, 2).to_string(), "5.2");
    assert!(version(2, 79) < version(3, 4));
    assert!(version(3, 4) < version(4, 0));
}

#[test]
fn header_of_gzip_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&blend_bytes(b"BLENDER-v279")).unwrap();
    let gzipped = encoder.finish().unwrap();
    let header = read_header(&write_file(dir.path(), "g.blend", &gzipped)).unwrap();
    assert_eq!(header.version, version(2, 79));
    assert_eq!(header.compression, Compression::Gzip);
}

#[test]
fn header_of_zstd_files() {
    let dir = tempfile::tempdir().unwrap();
    let packed = ruzstd::encoding::compress_to_vec(
        &blend_bytes(b"BLENDER17-01v0502")[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let header = read_header(&write_file(dir.path(), "z.blend", &packed)).unwrap();
    assert_eq!(header.version, version(5, 2));
    assert_eq!(header.compression, Compression::Zstd);

    // Blender's own zstd: many frames and a seek table.
    let header = read_header(&demo_blend()).unwrap();
    assert_eq!(header.version, version(3, 4));
    assert_eq!(header.compression, Compression::Zstd);
}

#[test]
fn header_of_corpus_files() {
    let Some(corpus) = corpus("header_of_corpus_files") else {
        return;
    };
    let cases = [
        (
            "gltf-b50-workbench/scenes/37_lamp_Workbench.blend",
            version(5, 2),
            Compression::Zstd,
        ),
        (
            "bat-udim-zstd/udim/v01_UDIM_BAT_debugging.blend",
            version(3, 2),
            Compression::Zstd,
        ),
        (
            "bat-particle-cache/T55539-particles/particle.blend",
            version(2, 79),
            Compression::Gzip,
        ),
        (
            "gltf-b40-crash/scenes/01_factors.blend",
            version(4, 0),
            Compression::None,
        ),
        (
            "deadline-cycles-denoise-anim/devfiles/submission_test_files/suzanne_animated/suzanne_animated.blend1",
            version(3, 6),
            Compression::None,
        ),
    ];
    for (file, expected, compression) in cases {
        let header = read_header(&corpus.join(file)).unwrap();
        assert_eq!(
            (header.version, header.compression),
            (expected, compression),
            "{file}"
        );
    }
}

#[test]
fn files_that_are_no_blend_are_named_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let zip = write_file(
        dir.path(),
        "archive.blend",
        b"PK\x03\x04\x14\x00\x00\x00rest",
    );
    let message = read_header(&zip).unwrap_err().to_string();
    assert!(message.contains("archive.blend"), "{message}");
    assert!(message.contains("not a .blend file"), "{message}");
    assert!(
        message.contains(r#"it starts with "PK\x03\x04"#),
        "{message}"
    );

    // Bytes from a fixed linear congruential generator; the first byte is no
    // compression magic.
    let mut state: u32 = 12345;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        })
        .collect();
    assert!(![0x1f, 0x28].contains(&random[0]));
    let noise = write_file(dir.path(), "noise.blend", &random);
    let err = read_header(&noise).unwrap_err();
    assert!(matches!(err, InspectError::NotBlend { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("noise.blend"), "{message}");
    assert!(message.contains("it starts with \""), "{message}");

    let empty = write_file(dir.path(), "empty.blend", b"");
    let message = read_header(&empty).unwrap_err().to_string();
    assert!(message.contains("empty.blend"), "{message}");
    assert!(message.contains("empty (0 bytes)"), "{message}");

    let gzipped_text = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"hello\n").unwrap();
        encoder.finish().unwrap()
    };
    let message = read_header(&write_file(dir.path(), "text.blend", &gzipped_text))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(r#"its gzip-compressed content starts with "hello\n""#),
        "{message}"
    );
}

#[test]
fn missing_and_truncated_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.blend");
    let message = read_header(&missing).unwrap_err().to_string();
    assert!(message.contains("cannot read"), "{message}");
    assert!(message.contains("missing.blend"), "{message}");

    let demo = std::fs::read(demo_blend()).unwrap();
    let cut = write_file(dir.path(), "cut.blend", &demo[..20]);
    let message = read_header(&cut).unwrap_err().to_string();
    assert!(message.contains("cannot decompress"), "{message}");
    assert!(message.contains("cut.blend (zstd)"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

// --- the version check, no Blender ---

#[test]
fn newer_major_versions_are_refused_with_both_versions_named() {
    let file = Path::new("/farm/scene.blend");
    let message = check_compatible(file, version(4, 0), "3.4.1")
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "/farm/scene.blend was saved by Blender 4.0, newer than this Blender (3.4.1), which \
         cannot open it (Blender 3.4 crashes on most 4.x files): save it from Blender 3.4 or \
         install a newer Blender"
    );
    let message = check_compatible(file, version(5, 2), "4.2.3 LTS")
        .unwrap_err()
        .to_string();
    assert!(message.contains("Blender 5.2"), "{message}");
    assert!(message.contains("4.2.3 LTS"), "{message}");
    assert!(message.contains("new file format"), "{message}");

    assert!(check_compatible(file, version(3, 4), "3.4.1").is_ok());
    assert!(check_compatible(file, version(2, 79), "3.4.1").is_ok());
    assert!(check_compatible(file, version(4, 0), "4.2.0").is_ok());
    // 4.5 LTS reads the 5.x format (and warns); 4.4 and before do not.
    assert!(check_compatible(file, version(5, 2), "4.5.15 LTS").is_ok());
    assert!(check_compatible(file, version(5, 0), "5.0.1").is_ok());
    let message = check_compatible(file, version(5, 0), "4.4.0")
        .unwrap_err()
        .to_string();
    assert!(message.contains("only Blender 4.5 and later"), "{message}");
    let message = check_compatible(file, version(5, 0), "3.4.1")
        .unwrap_err()
        .to_string();
    assert!(message.contains("new file format"), "{message}");
    // A major after that is refused, even by the newest Blender here.
    assert!(check_compatible(file, version(6, 0), "5.0.1").is_err());
    // A newer minor opens (with a warning the caller gives).
    assert!(check_compatible(file, version(3, 6), "3.4.1").is_ok());
    assert!(is_newer(version(3, 6), version(3, 4)));
    assert!(!is_newer(version(3, 4), version(3, 4)));
    assert!(!is_newer(version(2, 79), version(3, 4)));

    let message = check_compatible(file, version(3, 4), "unknown")
        .unwrap_err()
        .to_string();
    assert!(message.contains("\"unknown\""), "{message}");
}

// --- `herd inspect` with a fake Blender ---

#[cfg(unix)]
#[test]
fn newer_files_are_refused_before_blender_starts() {
    let Some(corpus) = corpus("newer_files_are_refused_before_blender_starts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // This Blender crashes on any file: a refusal proves it never ran.
    let blender = crashing_blender(dir.path());
    for (file, saved_by) in [
        ("gltf-b40-crash/scenes/01_factors.blend", "Blender 4.0"),
        (
            "gltf-b50-workbench/scenes/37_lamp_Workbench.blend",
            "Blender 5.2",
        ),
    ] {
        let message = inspect_error_with(&blender, &corpus.join(file));
        assert!(
            message.contains(&format!(
                "was saved by {saved_by}, newer than this Blender (3.4.1)"
            )),
            "{message}"
        );
        assert!(message.contains(file), "{message}");
        assert!(!message.contains("crashed"), "{message}");
    }
}

#[cfg(unix)]
#[test]
fn a_blender_crash_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let blender = crashing_blender(dir.path());
    let message = inspect_error_with(&blender, &demo_blend());
    assert!(
        message.contains("Blender crashed with signal 11 (SIGSEGV) while opening"),
        "{message}"
    );
    assert!(message.contains("demo.blend"), "{message}");
}

// --- `herd inspect` with the real Blender ---

#[test]
fn inspects_the_demo_scene() {
    let info = inspect_json(&demo_blend());
    assert_eq!(info.scene, "Demo");
    assert_eq!(
        (info.frame_start, info.frame_end, info.frame_step),
        (1, 24, 1)
    );
    assert_eq!((info.resolution_x, info.resolution_y), (320, 180));
    assert_eq!(info.resolution_percentage, 100);
    assert_eq!(info.engine, "CYCLES");
    assert_eq!(info.samples, Some(16));
    assert_eq!(info.file_format, "PNG");
    assert_eq!(info.fps, 24.0);
    assert_eq!(info.use_denoising, Some(false));
    assert!(info.camera.is_some());
    assert_eq!(info.saved_by, "3.4");
    assert_eq!(info.compression, Compression::Zstd);
    assert!(info.file.is_absolute());
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);

    let output = herd(&["inspect", demo_blend().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    for line in [
        "scene: Demo",
        "frames: 1-24 (step 1)",
        "resolution: 320x180 at 100% = 320x180",
        "engine: CYCLES",
        "samples: 16",
        "format: PNG",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(!text.contains("warning:"), "{text}");
}

#[test]
fn cli_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.blend");
    let message = inspect_error(&missing, &[]);
    assert!(message.contains("cannot read"), "{message}");
    assert!(message.contains("nowhere.blend"), "{message}");

    let empty = write_file(dir.path(), "empty.blend", b"");
    let message = inspect_error(&empty, &[]);
    assert!(
        message.contains("empty.blend is not a .blend file: it is empty"),
        "{message}"
    );
}

#[test]
fn corpus_corrupt_file_quotes_blender() {
    let Some(corpus) = corpus("corpus_corrupt_file_quotes_blender") else {
        return;
    };
    let file = corpus.join(
        "deadline-corrupt/test/deadline_submitter_for_blender/integ/scenes/blender_test.blend",
    );
    let message = inspect_error(&file, &[]);
    assert!(message.contains("Blender cannot open"), "{message}");
    assert!(message.contains("blender_test.blend"), "{message}");
    assert!(message.contains("Missing DNA block"), "{message}");
}

#[test]
fn corpus_compressed_files_open() {
    let Some(corpus) = corpus("corpus_compressed_files_open") else {
        return;
    };
    let udim = inspect_json(&corpus.join("bat-udim-zstd/udim/v01_UDIM_BAT_debugging.blend"));
    assert_eq!(
        (udim.saved_by.as_str(), udim.compression),
        ("3.2", Compression::Zstd)
    );
    assert_eq!(udim.engine, "BLENDER_EEVEE");
    assert_eq!(udim.samples, Some(4));
    assert_eq!(udim.use_denoising, None);
    assert!(udim.warnings.is_empty(), "{:?}", udim.warnings);

    let particles =
        inspect_json(&corpus.join("bat-particle-cache/T55539-particles/particle.blend"));
    assert_eq!(
        (particles.saved_by.as_str(), particles.compression),
        ("2.79", Compression::Gzip)
    );
    // 2.79's Blender Internal becomes EEVEE on load, without a complaint.
    assert_eq!(particles.engine, "BLENDER_EEVEE");
    assert_eq!((particles.frame_start, particles.frame_end), (1, 250));
    assert_eq!(particles.resolution_percentage, 50);
}

#[test]
fn corpus_denoising_backup_file_warns() {
    let Some(corpus) = corpus("corpus_denoising_backup_file_warns") else {
        return;
    };
    let info = inspect_json(&corpus.join(
        "deadline-cycles-denoise-anim/devfiles/submission_test_files/suzanne_animated/suzanne_animated.blend1",
    ));
    assert_eq!(info.saved_by, "3.6");
    assert_eq!((info.frame_start, info.frame_end), (1, 48));
    assert_eq!(info.engine, "CYCLES");
    assert_eq!(info.samples, Some(5));
    assert_eq!(info.use_denoising, Some(true));
    assert_eq!(info.camera.as_deref(), Some("CamFront"));
    assert!(
        info.warnings
            .iter()
            .any(|w| w.contains("Cycles denoising is on") && w.contains("OpenImageDenoiser")),
        "{:?}",
        info.warnings
    );
    let running = BlendVersion::parse_blender(&info.blender_version).unwrap();
    let newer_warned = info
        .warnings
        .iter()
        .any(|w| w.contains("was saved by Blender 3.6, newer than this Blender"));
    assert_eq!(newer_warned, running < version(3, 6), "{:?}", info.warnings);
}

#[test]
fn corpus_missing_addon_engine_is_named() {
    let Some(corpus) = corpus("corpus_missing_addon_engine_is_named") else {
        return;
    };
    let info = inspect_json(
        &corpus.join("luxcore-engine-missing/tests/full_export/full_export.test.blend"),
    );
    assert_eq!(info.engine, "LUXCORE");
    assert_eq!((info.frame_start, info.frame_end), (1, 42));
    assert_eq!(
        (
            info.resolution_x,
            info.resolution_y,
            info.resolution_percentage
        ),
        (1700, 1000, 120)
    );
    assert_eq!(info.compression, Compression::Gzip);
    assert!(
        info.warnings.iter().any(|w| w.starts_with(
            "engine LUXCORE is not available in this Blender; it will render with BLENDER_EEVEE"
        )),
        "{:?}",
        info.warnings
    );
}

#[test]
fn corpus_scene_without_camera_warns() {
    let Some(corpus) = corpus("corpus_scene_without_camera_warns") else {
        return;
    };
    let info = inspect_json(&corpus.join("gltf-nested-libs/scenes/21_scene.blend"));
    assert_eq!(info.camera, None);
    assert_eq!(
        info.warnings,
        ["scene 'Scene' has no camera: Blender will refuse to render it"]
    );

    let output = herd(&[
        "inspect",
        corpus
            .join("gltf-nested-libs/scenes/21_scene.blend")
            .to_str()
            .unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("camera: none\n"), "{text}");
    assert!(
        text.contains("warning: scene 'Scene' has no camera"),
        "{text}"
    );
}

#[test]
fn corpus_animation_starting_at_frame_zero() {
    let Some(corpus) = corpus("corpus_animation_starting_at_frame_zero") else {
        return;
    };
    let info = inspect_json(&corpus.join("gltf-anim-linked-lib/scenes/03_all_animations.blend"));
    assert_eq!((info.frame_start, info.frame_end), (0, 120));
    assert_eq!(info.fps, 60.0);
    assert_eq!(info.saved_by, "2.78");
    assert_eq!(info.engine, "CYCLES");
    assert_eq!(info.samples, Some(128));
}

/// The local node's warm Blender reads a scene as the inspecting Blender
/// does (so `herd render` starts one Blender, not two), and a scene name it
/// lacks falls back to the inspecting Blender's clear error.
#[test]
fn the_local_nodes_blender_reads_the_scene_as_herd_inspect_does() {
    use herd::controller::engine::LocalNode;
    use herd::controller::inspect::{inspect_scene, inspect_with_local};
    let blender = herd::blender::locate(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = LocalNode::config(blender.clone(), Some(1), Some(work.path().into()))
            .await
            .unwrap();
        let local = LocalNode::start(config).await.unwrap();
        let warm = inspect_with_local(&local, &blender, &demo_blend(), None)
            .await
            .unwrap();
        let alone = inspect_scene(&blender, &demo_blend(), None).await.unwrap();
        assert_eq!(warm, alone);
        let refused = local
            .inspect(&demo_blend(), Some("Nope"))
            .await
            .unwrap_err();
        assert!(refused.contains("no scene named 'Nope'"), "{refused}");
        let error = inspect_with_local(&local, &blender, &demo_blend(), Some("Nope"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no scene named 'Nope'"), "{error}");
        local.stop().await;
    });
}

/// The warm Blender keeps the scene its inspection opened for a job of the
/// same bytes instead of reading the file again, and that kept scene renders
/// pixel for pixel as a cold load of the job's copy does; other bytes, or a
/// second load, open the file again.
#[test]
fn the_inspected_scene_is_kept_for_the_same_bytes_and_renders_as_a_cold_load() {
    use herd::blender::{BlenderConfig, Worker};
    let blender = herd::blender::locate(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let job = work.path().join("job");
    std::fs::create_dir_all(&job).unwrap();
    let job_blend = job.join("demo.blend");
    std::fs::copy(demo_blend(), &job_blend).unwrap();
    let (blob, _) = herd::node::blobs::hash_file(&demo_blend()).unwrap();
    let config = BlenderConfig {
        path: blender,
        threads: Some(1),
        allow_scripts: false,
        frame_timeout: std::time::Duration::from_secs(120),
        max_frame_time: None,
        script_dir: work.path().join("scripts"),
    };
    let overrides = herd::wire::Overrides::default();
    let pixels = |path: &Path| image::open(path).unwrap().to_rgba8();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut warm = Worker::start(&config).await.unwrap();
        warm.inspect(&demo_blend(), None).await.unwrap();
        let loaded = warm.load(&job_blend, &job, Some(&blob)).await.unwrap();
        assert!(loaded.kept, "the same bytes as inspected are kept");
        assert_eq!(loaded.scene.frame_end, 24);
        let kept = warm
            .render(7, &work.path().join("kept"), &overrides)
            .await
            .unwrap();
        let again = warm.load(&job_blend, &job, Some(&blob)).await.unwrap();
        assert!(!again.kept, "only the scene an inspection left is kept");
        warm.inspect(&demo_blend(), None).await.unwrap();
        let other = "0".repeat(64);
        let reread = warm.load(&job_blend, &job, Some(&other)).await.unwrap();
        assert!(!reread.kept, "other bytes are read again");
        warm.quit().await;

        let mut cold = Worker::start(&config).await.unwrap();
        let loaded = cold.load(&job_blend, &job, None).await.unwrap();
        assert!(!loaded.kept);
        let fresh = cold
            .render(7, &work.path().join("cold"), &overrides)
            .await
            .unwrap();
        cold.quit().await;
        assert_eq!(pixels(&kept.preview), pixels(&fresh.preview));
    });
}
