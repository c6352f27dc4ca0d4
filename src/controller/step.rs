//! A step the controller's own Blender runs around a job (baking
//! simulations before it, encoding a movie after it): a script from
//! `assets/` with the artist's .blend, a JSON job, and progress read from
//! the lines it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Runs `script` in Blender (`blender -b BLEND --python SCRIPT -- JOB.json`)
/// with `job`; lines starting with `prefix` and reading `DONE/TOTAL` go to
/// `progress`. Returns every line Blender printed that starts with `herd-`,
/// or what went wrong with Blender's last error lines.
pub async fn run(
    blender: &Path,
    blend: &Path,
    script: &str,
    job: &serde_json::Value,
    prefix: &str,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<String>, String> {
    let scratch = std::env::temp_dir().join(format!("herd-step-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|err| format!("cannot create {}: {err}", scratch.display()))?;
        let script_path = scratch.join("herd_step.py");
        let job_path = scratch.join("job.json");
        // The steps' scripts import the inspector from beside them.
        tokio::fs::write(&script_path, script)
            .await
            .and(
                tokio::fs::write(
                    scratch.join("herd_inspect.py"),
                    crate::blender::INSPECT_SCRIPT,
                )
                .await,
            )
            .and(tokio::fs::write(&job_path, job.to_string()).await)
            .map_err(|err| format!("cannot write the step's files: {err}"))?;
        run_blender(blender, blend, &script_path, &job_path, prefix, progress).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

async fn run_blender(
    blender: &Path,
    blend: &Path,
    script: &PathBuf,
    job: &PathBuf,
    prefix: &str,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<String>, String> {
    let mut child = Command::new(blender)
        .arg("-b")
        .arg(blend)
        .arg("--python")
        .arg(script)
        .arg("--")
        .arg(job)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start it: {err}"))?;
    let stdout = child.stdout.take().ok_or("no output from Blender")?;
    let stderr = child.stderr.take().ok_or("no output from Blender")?;
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut last = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            last.push(line);
            if last.len() > 8 {
                last.remove(0);
            }
        }
        last
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut said = Vec::new();
    let mut tail = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(count) = line.strip_prefix(prefix)
            && let Some((done, total)) = count.split_once('/')
            && let (Ok(done), Ok(total)) = (done.trim().parse(), total.trim().parse())
        {
            progress(done, total);
        } else if line.starts_with("herd") {
            said.push(line);
        } else if line.contains("Error") {
            tail.push(line);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|err| format!("lost Blender: {err}"))?;
    tail.extend(errors.await.unwrap_or_default());
    if status.success() {
        Ok(said)
    } else {
        tail.extend(said);
        Err(format!(
            "Blender exited with {status}: {}",
            tail.join(" | ")
        ))
    }
}
