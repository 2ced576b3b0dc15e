//! CPU time of processes, read from `/proc` (Linux), so a row can say how
//! much the client and the store each spent.

/// Clock ticks per second of `/proc/*/stat`; 100 on every Linux we run on.
const TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time of process `pid` (or `self`), in milliseconds.
pub fn cpu_ms(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / TICKS_PER_S)
}

/// CPU spent by the process between two readings.
pub struct CpuSpan {
    pid: Option<u32>,
    start_ms: Option<f64>,
}

impl CpuSpan {
    /// Starts measuring `pid` (or this process).
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start_ms: cpu_ms(pid),
        }
    }

    /// CPU milliseconds since `start`.
    pub fn elapsed_ms(&self) -> Option<f64> {
        Some(cpu_ms(self.pid)? - self.start_ms?)
    }
}
