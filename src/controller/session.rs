//! A job's life on the controller, the same for `herd render` and the
//! window: the scene's simulations baked first when it has unbaked ones
//! ([`super::bake`]), the frames rendered on the farm by the engine, and,
//! for a movie scene, the movie encoded once every frame is in
//! ([`super::movie`]). The command line and the window only show it: the
//! steps around the job through [`Steps`], the engine's events and
//! snapshots through the function that drives its handle.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::engine::{self, EngineConfig, EngineHandle, JobSpec, JobSummary, Outcome};
use super::{bake, inspect, movie};

/// A step around the job, done by this machine's Blender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Baking the scene's simulations into the copy the nodes render.
    Bake,
    /// Encoding the movie from the frames.
    Encode,
}

/// What a session tells of its steps around the job (progress is frames
/// done of all; it may come often).
pub trait Steps: Send + Sync {
    /// A step began.
    fn started(&self, step: Step);
    /// A step's progress.
    fn progress(&self, step: Step, done: usize, total: usize);
    /// A step ended, with the file it wrote and the seconds it took.
    fn finished(&self, step: Step, path: &Path, secs: f64);
}

/// A job to run.
#[derive(Debug)]
pub struct Session {
    /// The job.
    pub spec: JobSpec,
    /// Its nodes (see [`super::pool::Pool::engine_config`]).
    pub config: EngineConfig,
    /// This machine's Blender, for the steps around the job.
    pub blender: Option<PathBuf>,
    /// Bake the scene's simulations first.
    pub bake: bool,
}

/// How a job that ran ended.
#[derive(Debug)]
pub struct Ended {
    /// The engine's summary of the frames.
    pub summary: JobSummary,
    /// For a movie scene whose frames are all in: the movie, or why it
    /// was not encoded (the frames stay).
    pub movie: Option<Result<PathBuf, String>>,
}

impl Ended {
    /// What went wrong, said for the user; none when the job is done.
    pub fn failure(&self) -> Option<String> {
        let summary = &self.summary;
        match &summary.outcome {
            Outcome::Complete => self.movie.as_ref()?.as_ref().err().cloned(),
            Outcome::Cancelled => Some(format!(
                "cancelled: {} of {} frames done",
                summary.frames_done, summary.frames_total
            )),
            Outcome::Stuck { reason } => Some(format!("the job stopped: {reason}")),
            Outcome::Incomplete => {
                let failed: Vec<String> = summary
                    .failed
                    .iter()
                    .map(|(frame, error)| format!("  frame {frame}: {error}"))
                    .collect();
                Some(format!(
                    "{} frames failed:\n{}",
                    summary.failed.len(),
                    failed.join("\n")
                ))
            }
        }
    }
}

impl Session {
    /// Runs the job: the nodes' check against the file's version, the bake
    /// when asked, then the engine, whose handle
    /// `drive` takes (showing its events) until it hands back the summary,
    /// then the movie. `notify` is the engine's wake-up (see
    /// [`engine::start`]). An error means the job could not run at all.
    pub async fn run<F, Fut>(
        mut self,
        steps: &dyn Steps,
        notify: Option<Arc<dyn Fn() + Send + Sync>>,
        drive: F,
    ) -> Result<Ended, String>
    where
        F: FnOnce(EngineHandle) -> Fut,
        Fut: Future<Output = Result<JobSummary, String>>,
    {
        // Each node is checked against the file's version as it joins.
        let check = inspect::node_check(&self.spec.blend).map_err(|err| err.to_string())?;
        self.spec.node_check = Some(check);
        if self.bake {
            let blender = self
                .blender
                .as_deref()
                .ok_or("no Blender on this machine to bake the simulations with")?;
            let running = Running::start(steps, Step::Bake);
            let baked = bake::bake_job(blender, &self.spec, running.progress()).await;
            let baked = running.finish(baked)?;
            self.spec.baked = Some(baked);
        }
        let movie = movie::Encode::for_job(&self.spec);
        let summary = drive(engine::start(self.spec, self.config, notify)).await?;
        let movie = match movie {
            Some(job) if summary.outcome == Outcome::Complete => Some(match &self.blender {
                Some(blender) => {
                    let running = Running::start(steps, Step::Encode);
                    let movie = movie::encode(blender, &job, running.progress()).await;
                    running.finish(movie.map_err(|err| err.to_string()))
                }
                None => Err("no Blender on this machine to encode the movie with".into()),
            }),
            _ => None,
        };
        Ok(Ended { summary, movie })
    }
}

/// A step under way, told to its [`Steps`].
struct Running<'a> {
    steps: &'a dyn Steps,
    step: Step,
    started: Instant,
}

impl<'a> Running<'a> {
    fn start(steps: &'a dyn Steps, step: Step) -> Self {
        steps.started(step);
        Self {
            steps,
            step,
            started: Instant::now(),
        }
    }

    /// Where the step's progress goes.
    fn progress(&self) -> impl FnMut(usize, usize) + 'a {
        let (steps, step) = (self.steps, self.step);
        move |done, total| steps.progress(step, done, total)
    }

    /// Tells how the step ended, and passes its result on.
    fn finish(self, result: Result<PathBuf, String>) -> Result<PathBuf, String> {
        let path = result?;
        let secs = self.started.elapsed().as_secs_f64();
        self.steps.finished(self.step, &path, secs);
        Ok(path)
    }
}
