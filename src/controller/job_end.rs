//! What happens for the user when a job ends: the user's own command
//! (`herd render --on-end CMD`, the window's "When a job ends, run"), run
//! by the shell with the job's [`JobSummary`] as JSON on its stdin, and the
//! words a desktop notification says.

use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;

use super::engine::{JobSummary, Outcome};

/// Why the job-end command could not run.
#[derive(Debug, thiserror::Error)]
pub enum JobEndError {
    /// The shell could not be started.
    #[error("cannot run the job-end command `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("the job-end command `{command}` failed: {source}")]
    Wait {
        /// The command.
        command: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The summary could not be written as JSON.
    #[error("cannot write the job's summary as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs `command` with the shell (`sh -c`; `cmd /C` on Windows), the job's
/// summary as one JSON document on its stdin, and waits for it. Its stdout
/// and stderr are herd's. A command that does not read its stdin is fine.
pub async fn run_command(command: &str, summary: &JobSummary) -> Result<ExitStatus, JobEndError> {
    let json = serde_json::to_vec(summary)?;
    #[cfg(windows)]
    let mut shell = {
        let mut shell = tokio::process::Command::new("cmd");
        shell.arg("/C").arg(command);
        shell
    };
    #[cfg(not(windows))]
    let mut shell = {
        let mut shell = tokio::process::Command::new("sh");
        shell.arg("-c").arg(command);
        shell
    };
    let mut child = shell
        .stdin(Stdio::piped())
        .env("HERD_JOB_OUTCOME", outcome_word(&summary.outcome))
        .spawn()
        .map_err(|source| JobEndError::Spawn {
            command: command.to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading closes the pipe: not an error.
        let _ = stdin.write_all(&json).await;
        let _ = stdin.write_all(b"\n").await;
        drop(stdin);
    }
    child.wait().await.map_err(|source| JobEndError::Wait {
        command: command.to_string(),
        source,
    })
}

/// The outcome as one word (also `HERD_JOB_OUTCOME` for the command).
pub fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Complete => "complete",
        Outcome::Incomplete => "incomplete",
        Outcome::Stuck { .. } => "stuck",
        Outcome::Cancelled => "cancelled",
    }
}

/// A notification's title and body for a job that ended with `summary`;
/// `None` for a job the user cancelled (they know).
pub fn notification(summary: &JobSummary) -> Option<(String, String)> {
    let counts = format!(
        "{} of {} frames in {}",
        summary.frames_done,
        summary.frames_total,
        summary.output_dir.display()
    );
    match &summary.outcome {
        Outcome::Complete => Some(("herd: the job is done".into(), counts)),
        Outcome::Incomplete => Some((
            "herd: the job finished with failed frames".into(),
            format!("{} frames failed; {counts}", summary.failed.len()),
        )),
        Outcome::Stuck { reason } => Some((
            "herd: the job stopped".into(),
            format!("{reason}; {counts}"),
        )),
        Outcome::Cancelled => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(outcome: Outcome) -> JobSummary {
        JobSummary {
            outcome,
            frames_total: 24,
            frames_done: 20,
            frames_skipped: 0,
            failed: vec![(3, "Blender crashed".into())],
            nodes: Vec::new(),
            retries: 1,
            wall_secs: 12.5,
            output_dir: "/renders/shot".into(),
        }
    }

    #[test]
    fn notifications_say_how_the_job_ended_and_none_for_a_cancelled_one() {
        let (title, body) = notification(&summary(Outcome::Complete)).unwrap();
        assert_eq!(title, "herd: the job is done");
        assert_eq!(body, "20 of 24 frames in /renders/shot");
        let (title, body) = notification(&summary(Outcome::Stuck {
            reason: "no node can render".into(),
        }))
        .unwrap();
        assert_eq!(title, "herd: the job stopped");
        assert!(body.starts_with("no node can render; "));
        let (_, body) = notification(&summary(Outcome::Incomplete)).unwrap();
        assert!(body.starts_with("1 frames failed"));
        assert!(notification(&summary(Outcome::Cancelled)).is_none());
    }

    #[tokio::test]
    async fn the_command_gets_the_summary_as_json_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("summary.json");
        let command = format!(
            "cat > '{}'; echo \"$HERD_JOB_OUTCOME\" >> '{}'",
            out.display(),
            out.display()
        );
        let status = run_command(&command, &summary(Outcome::Incomplete))
            .await
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        let json: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(json["outcome"], "incomplete");
        assert_eq!(json["frames_total"], 24);
        assert_eq!(json["frames_done"], 20);
        assert_eq!(json["output_dir"], "/renders/shot");
        assert_eq!(json["failed"][0][0], 3);
        assert_eq!(lines.next(), Some("incomplete"));
    }

    #[tokio::test]
    async fn a_command_that_reads_nothing_or_fails_is_reported_not_fatal() {
        let status = run_command("exit 3", &summary(Outcome::Complete))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
