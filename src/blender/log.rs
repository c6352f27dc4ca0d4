//! What Blender prints: the last lines an error report quotes, and a
//! frame's progress read from its statistics lines.

use super::*;

/// What Blender printed lately, shared with the tasks reading its output.
#[derive(Debug)]
pub struct OutputLog {
    lines: VecDeque<String>,
    pub(super) last_output: Instant,
    progress: f32,
    /// When the current command began.
    started: Instant,
    /// Seconds from the command's start to its first sample.
    sampling_after: Option<f64>,
}

impl Default for OutputLog {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            lines: VecDeque::with_capacity(LOG_TAIL_LINES),
            last_output: Instant::now(),
            progress: 0.0,
            started: Instant::now(),
            sampling_after: None,
        }
    }

    pub(super) fn push(&mut self, line: String) {
        self.last_output = Instant::now();
        self.stats(&line);
        if self.lines.len() == LOG_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Takes the progress from a statistics line, printed by Blender or sent
    /// by the worker's `render_stats` handler.
    pub(super) fn stats(&mut self, line: &str) {
        if let Some(progress) = parse_progress(line) {
            self.progress = progress;
            if self.sampling_after.is_none() {
                self.sampling_after = Some(self.started.elapsed().as_secs_f64());
            }
        }
    }

    /// The last lines Blender printed, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// Progress of the current frame, 0.0 to 1.0.
    pub fn progress(&self) -> f32 {
        self.progress
    }

    /// Seconds the current frame spent before its first sample: moving to
    /// the frame and preparing the scene (sync, BVH, shaders), what a warm
    /// scene saves. `None` until sampling began.
    pub fn prep_secs(&self) -> Option<f64> {
        self.sampling_after
    }

    /// Starts a new command: forget progress and lines, restart the watchdog.
    pub(super) fn reset(&mut self) {
        self.lines.clear();
        self.progress = 0.0;
        self.last_output = Instant::now();
        self.started = Instant::now();
        self.sampling_after = None;
    }
}

/// Reads a frame's progress from a Blender statistics line: Cycles
/// `Sample 3/16`, tiled Cycles `Rendered 2/4 Tiles, Sample 8/16`, EEVEE
/// `Rendering 5 / 64 samples`.
pub fn parse_progress(line: &str) -> Option<f32> {
    fn ratio(text: &str) -> Option<(f32, f32)> {
        let (done, total) = text.split_once('/')?;
        let done: f32 = done.trim().parse().ok()?;
        let total: f32 = total.split_whitespace().next()?.trim().parse().ok()?;
        (total > 0.0).then_some((done, total))
    }
    let stats = line.rsplit('|').next()?.trim();
    if stats == "Finished" {
        return Some(1.0);
    }
    let samples = stats
        .split(", ")
        .find_map(|part| part.strip_prefix("Sample ").and_then(ratio));
    let tiles = stats.split(", ").find_map(|part| {
        part.strip_prefix("Rendered ")
            .and_then(|rest| rest.strip_suffix(" Tiles"))
            .and_then(ratio)
    });
    let eevee = stats
        .strip_prefix("Rendering ")
        .and_then(|rest| rest.strip_suffix(" samples"))
        .and_then(ratio);
    let progress = match (tiles, samples.or(eevee)) {
        (Some((tile, tiles)), Some((sample, samples))) => {
            ((tile - 1.0).max(0.0) + sample / samples) / tiles
        }
        (Some((tile, tiles)), None) => tile / tiles,
        (None, Some((sample, samples))) => sample / samples,
        (None, None) => return None,
    };
    Some(progress.clamp(0.0, 1.0))
}

/// Locks the output log; a poisoned lock still holds usable lines.
pub fn lock(log: &Mutex<OutputLog>) -> std::sync::MutexGuard<'_, OutputLog> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one of Blender's output streams into `log`, line by line.
pub(super) async fn read_output(stream: impl AsyncRead + Unpin, log: Arc<Mutex<OutputLog>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::trace!(target: "herd::blender", "{line}");
        lock(&log).push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_from_cycles_and_eevee_lines() {
        let cycles = "Fra:3 Mem:9.46M (Peak 9.46M) | Time:00:00.02 | Mem:0.35M, Peak:0.35M | Demo, ViewLayer | Sample 4/16";
        assert_eq!(parse_progress(cycles), Some(0.25));
        let tiles =
            "Fra:1 Mem:9M | Time:00:01.00 | Scene, ViewLayer | Rendered 2/4 Tiles, Sample 8/16";
        assert_eq!(parse_progress(tiles), Some(0.375));
        let eevee = "Fra:1 Mem:30M | Time:00:02.00 | Scene, ViewLayer | Rendering 16 / 64 samples";
        assert_eq!(parse_progress(eevee), Some(0.25));
        assert_eq!(parse_progress("Fra:1 | Scene | Finished"), Some(1.0));
        assert_eq!(parse_progress("Fra:1 | Scene | Updating Shaders"), None);
        assert_eq!(parse_progress("Blender 3.4.1"), None);
        assert_eq!(parse_progress("| Sample 3/0"), None);
    }

    #[test]
    fn log_keeps_only_the_tail() {
        let mut log = OutputLog::new();
        for i in 0..100 {
            log.push(format!("line {i}"));
        }
        let tail = log.tail();
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 99"));
    }
}
