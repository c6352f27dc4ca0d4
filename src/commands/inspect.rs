//! `herd inspect`: read a .blend's scene with the local Blender.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use herd::blender;
use herd::controller::inspect::{self, SceneInfo};

/// Options of `herd inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The .blend file (a .blend1 backup works too).
    pub file: PathBuf,
    /// Print the scene as one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Blender executable (default: HERD_BLENDER, then `blender` on PATH).
    #[arg(long, env = "HERD_BLENDER")]
    pub blender: Option<PathBuf>,
}

/// Runs `herd inspect`.
pub async fn run(args: InspectArgs) -> Result<()> {
    let blender_path = blender::locate(args.blender.as_deref())?;
    let info = inspect::inspect(&blender_path, &args.file).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_summary(&info);
    }
    Ok(())
}

fn print_summary(info: &SceneInfo) {
    let optional = |value: Option<String>| value.unwrap_or_else(|| "none".into());
    let percent = info.resolution_percentage;
    let (width, height) = (
        u64::from(info.resolution_x) * u64::from(percent) / 100,
        u64::from(info.resolution_y) * u64::from(percent) / 100,
    );
    println!("file: {}", info.file.display());
    println!(
        "saved by: Blender {} (compression: {})",
        info.saved_by, info.compression
    );
    println!("inspected with: Blender {}", info.blender_version);
    println!("scene: {}", info.scene);
    println!(
        "frames: {}-{} (step {})",
        info.frame_start, info.frame_end, info.frame_step
    );
    println!("fps: {}", (info.fps * 1000.0).round() / 1000.0);
    println!(
        "resolution: {}x{} at {percent}% = {width}x{height}",
        info.resolution_x, info.resolution_y
    );
    println!("engine: {}", info.engine);
    println!("samples: {}", optional(info.samples.map(|n| n.to_string())));
    if let Some(denoising) = info.use_denoising {
        println!("denoising: {}", if denoising { "on" } else { "off" });
    }
    println!("format: {}", info.file_format);
    println!("camera: {}", optional(info.camera.clone()));
    let files: usize = info.dependencies.iter().map(|d| d.files.len()).sum();
    println!(
        "external files: {files} in {} data-blocks{}",
        info.dependencies.len(),
        if info.dependencies.is_empty() {
            ""
        } else {
            ":"
        }
    );
    for dependency in &info.dependencies {
        let count = dependency.files.len();
        let state = if !dependency.missing.is_empty() {
            format!("MISSING {} of {count}", dependency.missing.len())
        } else if count == 1 {
            "ok".to_string()
        } else {
            format!("{count} files")
        };
        println!("  {}: {state}", dependency.describe());
    }
    for warning in &info.warnings {
        println!("warning: {warning}");
    }
}
