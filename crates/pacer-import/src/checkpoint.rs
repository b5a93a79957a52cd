//! The durable record of progress: every record before `offset` is acknowledged (delivered,
//! dead-lettered or invalid). Written with write + fsync + atomic rename + directory fsync, so a
//! crash leaves either the old checkpoint or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input::Format;

/// Progress through one input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The input file, as given.
    pub input: String,
    /// Its size when the import started (a changed file is refused on resume).
    pub input_len: u64,
    /// The input format.
    pub format: Option<Format>,
    /// Bytes acknowledged from the start.
    pub offset: u64,
    /// Lines acknowledged from the start.
    pub line: u64,
    /// The CSV header row.
    pub headers: Option<Vec<String>>,
    /// Records delivered so far.
    pub delivered: u64,
    /// Records dead-lettered after the server refused them.
    pub dead_lettered: u64,
    /// Invalid input records.
    pub invalid: u64,
    /// The dead-letter file this checkpoint's counts went into.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Its length when this checkpoint was saved: a resume cuts it back to this, so nothing the
    /// resume writes again stands in it twice.
    #[serde(default)]
    pub dead_letter_len: Option<u64>,
}

impl Checkpoint {
    /// The checkpoint path for an input: `<input>.checkpoint`.
    #[must_use]
    pub fn path_for(input: &Path) -> PathBuf {
        let mut path = input.as_os_str().to_owned();
        path.push(".checkpoint");
        PathBuf::from(path)
    }

    /// Reads a checkpoint.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = fs::read_to_string(path)
            .map_err(|error| format!("cannot read the checkpoint {}: {error}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|error| format!("the checkpoint {} is damaged: {error}", path.display()))
    }

    /// Writes the checkpoint durably.
    ///
    /// # Errors
    /// When writing, syncing or renaming fails.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temporary)?;
            file.write_all(
                serde_json::to_string(self)
                    .expect("checkpoints serialize")
                    .as_bytes(),
            )?;
            file.sync_all()?;
        }
        fs::rename(&temporary, path)?;
        if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            File::open(directory)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let directory =
            std::env::temp_dir().join(format!("pacer-checkpoint-{}", std::process::id()));
        fs::create_dir_all(&directory).unwrap();
        let path = directory.join("input.ndjson.checkpoint");
        let checkpoint = Checkpoint {
            input: "input.ndjson".into(),
            input_len: 10,
            format: Some(Format::Ndjson),
            offset: 5,
            line: 2,
            ..Checkpoint::default()
        };
        checkpoint.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
        assert!(!directory.join("input.ndjson.checkpoint.tmp").exists());
        fs::remove_dir_all(&directory).unwrap();
    }
}
