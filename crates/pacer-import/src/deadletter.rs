//! Records that will never be delivered, with why: one JSON object per line.
//!
//! Crash-safe with the checkpoint: each checkpoint records how long this file was when it was
//! saved (after syncing it), and a resume cuts the file back to that length. Whatever a crash
//! left past it (a torn last line, entries for lines the checkpoint had not covered yet, which
//! the resume reads again) is gone before the resume writes them once more, so no record is
//! ever dead-lettered twice. A fresh run only drops a torn last line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde_json::json;

/// An append-only NDJSON file of refused and invalid records.
#[derive(Debug)]
pub struct DeadLetters {
    file: BufWriter<File>,
    /// The file's length with everything written so far.
    len: u64,
}

impl DeadLetters {
    /// Opens (appending) `path`. `keep` is the length a checkpoint recorded: anything past it
    /// is cut. Without it, only a torn last line (no newline at its end) is.
    ///
    /// # Errors
    /// When the file cannot be opened, read or cut.
    pub fn open(path: &Path, keep: Option<u64>) -> Result<Self, String> {
        let failed = |error: std::io::Error| {
            format!(
                "cannot open the dead-letter file {}: {error}",
                path.display()
            )
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(failed)?;
        let len = file.metadata().map_err(failed)?.len();
        let whole = match keep {
            Some(keep) if keep <= len => keep,
            _ => whole_lines(&mut file, len).map_err(failed)?,
        };
        if whole < len {
            tracing::warn!(
                cut = len - whole,
                "dead-letter file: cutting what the checkpoint does not cover (a crash's leftovers)"
            );
            file.set_len(whole).map_err(failed)?;
            file.sync_data().map_err(failed)?;
        }
        Ok(Self {
            file: BufWriter::new(file),
            len: whole,
        })
    }

    /// Records line `line` (raw text `raw`) as refused for `reason`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn write(&mut self, line: u64, kind: &str, reason: &str, raw: &str) -> std::io::Result<()> {
        let mut entry = json!({"line": line, "kind": kind, "reason": reason, "record": raw})
            .to_string()
            .into_bytes();
        entry.push(b'\n');
        self.file.write_all(&entry)?;
        self.len += entry.len() as u64;
        Ok(())
    }

    /// The file's length once everything written is flushed: what a checkpoint records.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is in the file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

/// The length of `file` up to and with its last newline: a torn last line is left out.
fn whole_lines(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buffer = [0_u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(newline) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + newline as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("pacer-dead-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_torn_last_line_is_cut_and_whole_lines_stay() {
        let path = scratch("torn");
        std::fs::write(&path, "{\"line\":1}\n{\"line\":2}\n{\"line\":3,\"rea").unwrap();
        let mut dead = DeadLetters::open(&path, None).unwrap();
        assert_eq!(dead.len(), 22);
        dead.write(4, "invalid", "why", "raw").unwrap();
        dead.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["line"], 4);
        assert_eq!(dead.len(), text.len() as u64);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_resume_cuts_back_to_the_checkpointed_length() {
        let path = scratch("resume");
        std::fs::write(&path, "{\"line\":1}\n{\"line\":2}\n{\"line\":3}\n").unwrap();
        let dead = DeadLetters::open(&path, Some(11)).unwrap();
        assert_eq!(dead.len(), 11);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"line\":1}\n");
        // A recorded length past the end (the file was replaced): nothing is cut.
        drop(dead);
        assert_eq!(DeadLetters::open(&path, Some(500)).unwrap().len(), 11);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_of_one_torn_line_is_emptied() {
        let path = scratch("one");
        std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
        assert!(DeadLetters::open(&path, None).unwrap().is_empty());
        std::fs::remove_file(&path).unwrap();
    }
}
