//! One progress line on stderr, rewritten in place, when stderr is a
//! terminal; nothing otherwise (a log file, a pipe, a test).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// At most this often.
const EVERY: Duration = Duration::from_millis(200);

/// The progress line.
pub struct Progress {
    on: bool,
    last: Option<Instant>,
}

impl Progress {
    /// Shown when stderr is a terminal.
    pub fn new() -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Rewrites the line with `text()`, unless it was rewritten a moment ago.
    pub fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.on || self.last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{}", text());
        let _ = e.flush();
    }

    /// Clears the line.
    pub fn clear(&mut self) {
        if self.on && self.last.take().is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}
