//! Whether a working Blender is alive: the node's answer to "is this frame
//! hung?".
//!
//! Silence is not a hang: in the background Cycles prints `Sample 1/N` and
//! then nothing until the frame ends, however long that is. A Blender makes
//! progress when it uses CPU time, so that is what counts, read two ways:
//! from `/proc/PID` on Linux (which sees Blender even while its Python is
//! blocked, e.g. while a file loads), and from the worker's heartbeat thread,
//! which reports the CPU time of Blender's other threads every second on any
//! system. Output (a printed line, a statistics update) counts too. A
//! SIGSTOPped or deadlocked Blender uses no CPU and prints nothing: after
//! `--frame-timeout` without any sign it is killed. A Blender busy in an
//! endless loop does use CPU; only `--max-frame-time` catches that.

use std::time::{Duration, Instant};

/// CPU time below which a reading is noise, whatever the wall time: a
/// deadlocked process still wakes up now and then.
const MIN_CPU_SECS: f64 = 0.05;

/// Share of one core, over the wall time since the last sign of life, that
/// CPU time must grow by to count as progress.
const MIN_CPU_SHARE: f64 = 0.01;

/// Where a CPU time reading came from; each has its own baseline, since the
/// two clocks differ slightly (ticks against nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// `/proc/PID/stat`, less the heartbeat thread's own time.
    Proc,
    /// The worker's heartbeat (`time.process_time() - time.thread_time()`).
    Heartbeat,
}

/// The last sign of life of one Blender, and the CPU readings it is judged
/// by.
#[derive(Debug)]
pub struct Liveness {
    last_sign: Instant,
    /// Per source: (reading at the last sign of life, latest reading).
    proc_cpu: Option<(f64, f64)>,
    heartbeat_cpu: Option<(f64, f64)>,
}

impl Liveness {
    /// Starts watching at `now`, with no readings yet.
    pub fn new(now: Instant) -> Self {
        Self {
            last_sign: now,
            proc_cpu: None,
            heartbeat_cpu: None,
        }
    }

    /// A sign of life at `now` (a command started, a line printed, a CPU
    /// reading grew): the quiet time starts again from here, and the latest
    /// readings become the baselines.
    pub fn sign(&mut self, now: Instant) {
        self.last_sign = now;
        for reading in [&mut self.proc_cpu, &mut self.heartbeat_cpu]
            .into_iter()
            .flatten()
        {
            reading.0 = reading.1;
        }
    }

    /// Records a CPU time reading (seconds since Blender started) from
    /// `source`; it is a sign of life when it grew by more than noise since
    /// the last one.
    pub fn cpu(&mut self, source: CpuSource, cpu_secs: f64, now: Instant) {
        let slot = match source {
            CpuSource::Proc => &mut self.proc_cpu,
            CpuSource::Heartbeat => &mut self.heartbeat_cpu,
        };
        let Some((baseline, latest)) = slot else {
            *slot = Some((cpu_secs, cpu_secs));
            return;
        };
        *latest = cpu_secs;
        let wall = now.saturating_duration_since(self.last_sign).as_secs_f64();
        if cpu_secs - *baseline > MIN_CPU_SECS + MIN_CPU_SHARE * wall {
            self.sign(now);
        }
    }

    /// How long Blender has shown no sign of life, at `now`.
    pub fn quiet_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_sign)
    }
}

/// CPU seconds (user and system) process `pid` has used, less those of its
/// thread `except_tid` (the heartbeat thread, whose own ticking must not make
/// a deadlocked Blender look busy). `None` where `/proc` does not exist or
/// the process is gone.
pub fn proc_cpu_secs(pid: u32, except_tid: Option<u32>) -> Option<f64> {
    let total = stat_cpu_ticks(&format!("/proc/{pid}/stat"))?;
    let own = except_tid
        .and_then(|tid| stat_cpu_ticks(&format!("/proc/{pid}/task/{tid}/stat")))
        .unwrap_or(0);
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some(total.saturating_sub(own) as f64 / 100.0)
}

/// utime + stime of a `/proc/.../stat` file, in clock ticks.
fn stat_cpu_ticks(path: &str) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime (fields 14 and 15) of a `stat` line. The command name, in
/// parentheses, may hold spaces and parentheses itself, so fields are counted
/// from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (field 3) ... utime is field 14, the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_odd_names() {
        let stat = "4242 (blender (x) 1) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 1000 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_time() {
        let mut spent = 0u64;
        for i in 0..2_000_000u64 {
            spent = spent.wrapping_add(i * i);
        }
        assert!(spent > 0);
        if cfg!(target_os = "linux") {
            assert!(proc_cpu_secs(std::process::id(), None).is_some());
        }
    }

    #[test]
    fn cpu_growth_is_life_and_flat_cpu_is_not() {
        let start = Instant::now();
        let mut live = Liveness::new(start);
        live.cpu(CpuSource::Proc, 10.0, start);
        // Busy: a core's worth of CPU per second keeps it alive.
        for second in 1..=100 {
            let now = start + Duration::from_secs(second);
            live.cpu(CpuSource::Proc, 10.0 + second as f64, now);
            assert!(live.quiet_for(now) < Duration::from_secs(1));
        }
        // Stopped: the reading stays, the quiet time grows.
        let stopped = start + Duration::from_secs(100);
        for second in 1..=30 {
            let now = stopped + Duration::from_secs(second);
            live.cpu(CpuSource::Proc, 110.0, now);
        }
        assert_eq!(
            live.quiet_for(stopped + Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn noise_below_the_share_is_not_life() {
        let start = Instant::now();
        let mut live = Liveness::new(start);
        live.cpu(CpuSource::Heartbeat, 5.0, start);
        // 0.5 % of a core: a deadlocked process waking up now and then.
        for second in 1..=600 {
            let now = start + Duration::from_secs(second);
            live.cpu(CpuSource::Heartbeat, 5.0 + 0.005 * second as f64, now);
        }
        assert_eq!(
            live.quiet_for(start + Duration::from_secs(600)),
            Duration::from_secs(600)
        );
    }
}
