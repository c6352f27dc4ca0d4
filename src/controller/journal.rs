//! The job journal: an append-only log in the output folder (one JSON object
//! a line) of the job's settings and every frame written. A controller
//! killed at any moment and started again with the same arguments reads it
//! back and does not render those frames again. A line torn by a crash is
//! ignored.
//!
//! A running job writes through a [`JournalWriter`]: a task that takes the
//! frames as they finish and writes whatever has gathered with one `fsync`,
//! off the async threads, so the engine never waits on the disk.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::wire::Overrides;

/// File name of the journal inside the output folder.
pub const JOURNAL_NAME: &str = ".herd-journal.jsonl";

/// What makes two runs the same job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// SHA-256 of the .blend.
    pub blob: String,
    /// The frames, as a compact list.
    pub frames: String,
    /// Overrides of the file's settings.
    pub overrides: Overrides,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Job(JobRecord),
    Frame {
        frame: i32,
        node: String,
        secs: Option<f64>,
    },
    /// The job ended with every frame in: a later run with `--overwrite`
    /// renders them all again, where a killed one would resume.
    Complete,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
}

/// What an earlier run of the same job left.
#[derive(Debug, Default)]
pub struct Previous {
    /// Frames the earlier run wrote.
    pub done: BTreeSet<i32>,
    /// The folder's journal was of a job with other settings.
    pub other_job: Option<JobRecord>,
}

impl Journal {
    /// Opens the journal in `dir` for `job`. When the last job recorded there
    /// is the same job, its frames are returned as done; otherwise the job is
    /// recorded anew.
    pub fn open(dir: &Path, job: &JobRecord) -> std::io::Result<(Self, Previous)> {
        let path = dir.join(JOURNAL_NAME);
        let mut previous = Previous::default();
        let mut last_job: Option<JobRecord> = None;
        let mut torn = false;
        let mut complete = false;
        if let Ok(text) = std::fs::read(&path) {
            torn = !text.is_empty() && !text.ends_with(b"\n");
            for line in text.as_slice().lines() {
                match serde_json::from_str::<Line>(&line?) {
                    Ok(Line::Job(record)) => {
                        previous.done.clear();
                        complete = false;
                        last_job = Some(record);
                    }
                    Ok(Line::Frame { frame, .. }) => {
                        if std::mem::take(&mut complete) {
                            // A run after a complete one: its own frames.
                            previous.done.clear();
                        }
                        previous.done.insert(frame);
                    }
                    Ok(Line::Complete) => complete = true,
                    Err(_) => {}
                }
            }
        }
        if complete {
            // The last run finished: nothing of it is to resume.
            previous.done.clear();
        }
        let same = last_job.as_ref() == Some(job);
        if !same {
            previous.done.clear();
            previous.other_job = last_job;
        }
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut journal = Self { file, path };
        if torn {
            // End the torn line so the next record starts on its own.
            journal.file.write_all(b"\n")?;
        }
        if !same {
            journal.append(&Line::Job(job.clone()))?;
        }
        Ok((journal, previous))
    }

    /// Records that `frame` is in the output folder.
    pub fn frame_done(&mut self, frame: i32, node: &str, secs: Option<f64>) -> std::io::Result<()> {
        self.append(&Line::Frame {
            frame,
            node: node.to_string(),
            secs,
        })
    }

    /// Records that `frames` are in the output folder: one write, one
    /// `fsync`.
    pub fn frames_done(&mut self, frames: &[FrameRecord]) -> std::io::Result<()> {
        let mut text = String::new();
        for record in frames {
            let line = Line::Frame {
                frame: record.frame,
                node: record.node.clone(),
                secs: record.secs,
            };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }

    /// Hands the journal to a writer task on the current tokio runtime.
    pub fn spawn_writer(self) -> (JournalWriter, mpsc::Receiver<String>) {
        let (frames_tx, frames_rx) = mpsc::channel(WRITER_QUEUE);
        let (errors_tx, errors_rx) = mpsc::channel(16);
        let task = tokio::spawn(write_batches(self, frames_rx, errors_tx));
        let writer = JournalWriter {
            frames: Some(frames_tx),
            task: Some(task),
        };
        (writer, errors_rx)
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }
}

/// Records in the journal in `dir` that the job ended with every frame in.
pub fn mark_complete(dir: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::options()
        .append(true)
        .open(dir.join(JOURNAL_NAME))?;
    let mut text = serde_json::to_string(&Line::Complete).map_err(std::io::Error::other)?;
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// Frames that can wait for the writer before the engine waits for it.
const WRITER_QUEUE: usize = 1024;

/// A frame in the output folder, for the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    /// Frame number.
    pub frame: i32,
    /// The node that rendered it.
    pub node: String,
    /// Seconds its render took.
    pub secs: Option<f64>,
}

/// A journal being written by its own task ([`Journal::spawn_writer`]).
/// What cannot be written is told on the error channel returned with it,
/// said for the user.
#[derive(Debug)]
pub struct JournalWriter {
    frames: Option<mpsc::Sender<FrameRecord>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JournalWriter {
    /// Queues a frame for the journal; waits only while the writer is
    /// [`WRITER_QUEUE`] frames behind.
    pub async fn frame_done(&self, record: FrameRecord) {
        if let Some(frames) = &self.frames {
            let _ = frames.send(record).await;
        }
    }

    /// Writes what is queued and stops the writer; returns once it is on
    /// disk.
    pub async fn close(&mut self) {
        self.frames = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The writer task: takes what gathered, writes it with one `fsync` off the
/// async threads, again until the queue closes.
async fn write_batches(
    journal: Journal,
    mut frames: mpsc::Receiver<FrameRecord>,
    errors: mpsc::Sender<String>,
) {
    let mut journal = Some(journal);
    while let Some(first) = frames.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = frames.try_recv() {
            batch.push(more);
        }
        let Some(mut open) = journal.take() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            let result = open.frames_done(&batch);
            (open, batch, result)
        })
        .await;
        match written {
            Ok((open, batch, result)) => {
                if let Err(err) = result {
                    let numbers: Vec<String> = batch
                        .iter()
                        .map(|record| record.frame.to_string())
                        .collect();
                    let _ = errors
                        .send(format!(
                            "cannot write the journal {}: {err}; a resumed job may render frame(s) {} again",
                            open.path().display(),
                            numbers.join(", ")
                        ))
                        .await;
                }
                journal = Some(open);
            }
            Err(err) => {
                let _ = errors
                    .send(format!(
                        "the journal's writer crashed: {err}; a resumed job may render frames again"
                    ))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(frames: &str) -> JobRecord {
        JobRecord {
            blob: "ab".repeat(32),
            frames: frames.into(),
            overrides: Overrides::default(),
        }
    }

    #[test]
    fn a_finished_job_leaves_nothing_to_resume_but_a_later_killed_run_does() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), &job("1-2")).unwrap();
        journal.frame_done(1, "n1", None).unwrap();
        journal.frame_done(2, "n1", None).unwrap();
        drop(journal);
        mark_complete(dir.path()).unwrap();
        // Finished: an --overwrite run renders everything again.
        let (mut journal, previous) = Journal::open(dir.path(), &job("1-2")).unwrap();
        assert!(previous.done.is_empty(), "{previous:?}");
        // That run is killed after frame 2: only its own frame is done.
        journal.frame_done(2, "n2", None).unwrap();
        drop(journal);
        let (_, previous) = Journal::open(dir.path(), &job("1-2")).unwrap();
        assert_eq!(previous.done.into_iter().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_same_job_resumes_and_another_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, previous) = Journal::open(dir.path(), &job("1-3")).unwrap();
        assert!(previous.done.is_empty());
        journal.frame_done(1, "n1", Some(1.0)).unwrap();
        journal.frame_done(3, "n2", None).unwrap();
        drop(journal);
        // A crash mid-write leaves a torn line: it is ignored.
        let path = dir.path().join(JOURNAL_NAME);
        let mut file = std::fs::File::options().append(true).open(&path).unwrap();
        file.write_all(b"{\"kind\":\"frame\",\"fra").unwrap();
        drop(file);

        let (mut journal, previous) = Journal::open(dir.path(), &job("1-3")).unwrap();
        assert_eq!(previous.done.into_iter().collect::<Vec<_>>(), vec![1, 3]);
        journal.frame_done(2, "n1", None).unwrap();
        drop(journal);
        let (_, previous) = Journal::open(dir.path(), &job("1-3")).unwrap();
        assert_eq!(previous.done.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        let (_, previous) = Journal::open(dir.path(), &job("1-5")).unwrap();
        assert!(previous.done.is_empty());
        assert_eq!(previous.other_job, Some(job("1-3")));
    }

    #[tokio::test]
    async fn the_writer_task_writes_every_frame_before_close_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), &job("1-500")).unwrap();
        let (mut writer, mut errors) = journal.spawn_writer();
        for frame in 1..=500 {
            writer
                .frame_done(FrameRecord {
                    frame,
                    node: "n1".into(),
                    secs: Some(0.5),
                })
                .await;
        }
        writer.close().await;
        assert!(errors.try_recv().is_err(), "no error");
        let (_, previous) = Journal::open(dir.path(), &job("1-500")).unwrap();
        assert_eq!(previous.done.len(), 500);
        assert_eq!(previous.done.last(), Some(&500));
    }
}
