//! Log output: every line goes to stdout (for the journal or the container runtime) and the
//! most recent ones are also kept in memory for the admin API's `logs` call, so an operator can
//! read them without a shell on the host.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// How many recent lines are kept.
pub const KEPT_LINES: usize = 2_000;

static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The `tracing_subscriber` writer: stdout, plus the recent-lines buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(Vec::with_capacity(256))
    }
}

/// Collects one formatted event; written out when dropped (the subscriber drops it right
/// after the event), so lines from concurrent tasks never interleave.
#[derive(Debug)]
pub struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = std::io::stdout().lock().write_all(&self.0);
        let text = String::from_utf8_lossy(&self.0);
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines() {
            if recent.len() == KEPT_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
    }
}

/// The last `n` lines, oldest first.
pub fn recent(n: usize) -> Vec<String> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent
        .iter()
        .skip(recent.len().saturating_sub(n))
        .cloned()
        .collect()
}
