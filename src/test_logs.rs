//! Unit tests' view of `tracing` output: what a closure logged, as text.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
pub(crate) struct Shared(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    pub(crate) fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Runs `f` with a subscriber that writes every level (as JSON when `json`), and returns what it wrote.
pub(crate) fn logged(json: bool, f: impl FnOnce()) -> String {
    // With one dispatcher alive, a callsite's interest is fixed by whichever thread reaches it first (another
    // test's, without a subscriber); a second dispatcher, kept for the call, makes tracing ask every time.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let out = Shared::default();
    let writer = out.clone();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone());
    if json {
        tracing::subscriber::with_default(builder.json().finish(), f);
    } else {
        tracing::subscriber::with_default(builder.finish(), f);
    }
    out.text()
}
