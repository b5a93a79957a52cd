//! Records that will never be delivered, with why: one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::json;

/// An append-only NDJSON file of refused and invalid records.
#[derive(Debug)]
pub struct DeadLetters {
    file: BufWriter<File>,
}

impl DeadLetters {
    /// Opens (appending) `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| {
                format!(
                    "cannot open the dead-letter file {}: {error}",
                    path.display()
                )
            })?;
        Ok(Self {
            file: BufWriter::new(file),
        })
    }

    /// Records line `line` (raw text `raw`) as refused for `reason`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn write(&mut self, line: u64, kind: &str, reason: &str, raw: &str) -> std::io::Result<()> {
        let entry = json!({"line": line, "kind": kind, "reason": reason, "record": raw});
        writeln!(self.file, "{entry}")
    }

    /// Flushes and syncs, before a checkpoint says these lines are acknowledged.
    ///
    /// # Errors
    /// When flushing or syncing fails.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}
