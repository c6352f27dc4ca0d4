//! The job journal: an append-only log in the output folder (one JSON object
//! a line) of the job's settings and every frame written. A controller
//! killed at any moment and started again with the same arguments reads it
//! back and does not render those frames again. A line torn by a crash is
//! ignored.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
        if let Ok(text) = std::fs::read(&path) {
            torn = !text.is_empty() && !text.ends_with(b"\n");
            for line in text.as_slice().lines() {
                match serde_json::from_str::<Line>(&line?) {
                    Ok(Line::Job(record)) => {
                        previous.done.clear();
                        last_job = Some(record);
                    }
                    Ok(Line::Frame { frame, .. }) => {
                        previous.done.insert(frame);
                    }
                    Err(_) => {}
                }
            }
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
}
