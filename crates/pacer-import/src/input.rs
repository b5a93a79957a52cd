//! Streaming input: NDJSON or CSV, one record at a time, with the byte offset after each record
//! (for checkpoints) and constant memory whatever the file size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::csv_rows::{CsvRows, Row};
use crate::record::Record;

/// The longest line read; a longer one is reported invalid without being held in memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The input format.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
}

impl Format {
    /// The format a file name suggests (`.csv` is CSV, anything else NDJSON).
    #[must_use]
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(extension) if extension.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Ndjson,
        }
    }
}

/// One input record and where it ends.
#[derive(Debug)]
pub struct Item {
    /// 1-based line number where the record starts.
    pub line: u64,
    /// Byte offset just after the record: resuming here skips it.
    pub end: u64,
    /// The record, or why it is invalid.
    pub record: Result<Record, String>,
    /// The raw text (cut at 1 KiB), for the dead-letter file.
    pub raw: String,
}

/// Where reading starts: the beginning, or a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Start {
    /// Byte offset.
    pub offset: u64,
    /// Lines already read.
    pub line: u64,
    /// The CSV header row, when resuming a CSV file past it.
    pub headers: Option<Vec<String>>,
}

/// A streaming reader of records.
pub struct Input {
    kind: Kind,
}

enum Kind {
    Ndjson {
        reader: BufReader<Box<dyn Read + Send>>,
        offset: u64,
        line: u64,
    },
    Csv {
        /// Boxed: the CSV parser's tables are large.
        rows: Box<CsvRows<BufReader<Box<dyn Read + Send>>>>,
        headers: csv::StringRecord,
        base_offset: u64,
        base_line: u64,
    },
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").finish_non_exhaustive()
    }
}

impl Input {
    /// Opens `path` (`None` or `-` for stdin) as `format`, from `start`.
    ///
    /// # Errors
    /// When the file cannot be opened or seeked, or a CSV file has no header row.
    pub fn open(path: Option<&Path>, format: Format, start: &Start) -> Result<Self, String> {
        let source: Box<dyn Read + Send> = match path {
            Some(path) if path != Path::new("-") => {
                let mut file = File::open(path)
                    .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
                if start.offset > 0 {
                    file.seek(SeekFrom::Start(start.offset))
                        .map_err(|error| format!("cannot seek {}: {error}", path.display()))?;
                }
                Box::new(file)
            }
            _ if start.offset > 0 => return Err("cannot resume from standard input".into()),
            _ => Box::new(io::stdin()),
        };
        let kind = match format {
            Format::Ndjson => Kind::Ndjson {
                reader: BufReader::with_capacity(64 * 1024, source),
                offset: start.offset,
                line: start.line,
            },
            Format::Csv => {
                let mut rows = Box::new(CsvRows::new(BufReader::with_capacity(64 * 1024, source)));
                let headers = match &start.headers {
                    Some(headers) => csv::StringRecord::from(headers.clone()),
                    None => read_headers(&mut rows)?,
                };
                // Lines and bytes count from where reading started: past the header row when
                // it was read here, past the checkpoint when resuming.
                let (base_offset, base_line) = match &start.headers {
                    Some(_) => (start.offset, start.line),
                    None => (start.offset + rows.consumed, start.line + rows.newlines),
                };
                rows.consumed = 0;
                rows.newlines = 0;
                Kind::Csv {
                    rows,
                    headers,
                    base_offset,
                    base_line,
                }
            }
        };
        Ok(Self { kind })
    }

    /// The CSV header row, to store in a checkpoint.
    #[must_use]
    pub fn headers(&self) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Csv { headers, .. } => Some(headers.iter().map(str::to_owned).collect()),
            Kind::Ndjson { .. } => None,
        }
    }

    /// The next record, `None` at the end. I/O errors end the input with an `Err`.
    ///
    /// # Errors
    /// When reading fails.
    pub fn next_item(&mut self) -> Result<Option<Item>, String> {
        match &mut self.kind {
            Kind::Ndjson {
                reader,
                offset,
                line,
            } => next_ndjson(reader, offset, line),
            Kind::Csv {
                rows,
                headers,
                base_offset,
                base_line,
            } => next_csv(rows, headers, *base_offset, *base_line),
        }
    }
}

/// The CSV header row, with a UTF-8 byte-order mark stripped from the first column name.
fn read_headers(
    rows: &mut CsvRows<BufReader<Box<dyn Read + Send>>>,
) -> Result<csv::StringRecord, String> {
    let row = rows
        .next_row()
        .map_err(|error| format!("cannot read the CSV header: {error}"))?;
    let headers = match row {
        Some(Row::Fields(fields)) => csv::StringRecord::from_byte_record(fields)
            .map_err(|_| "the CSV header row is not UTF-8".to_owned())?,
        Some(Row::TooLarge(why)) => return Err(format!("the CSV header row is too large: {why}")),
        None => return Err("the CSV file has no header row".into()),
    };
    if headers.iter().all(str::is_empty) {
        return Err("the CSV file has no header row".into());
    }
    Ok(headers
        .iter()
        .enumerate()
        .map(|(n, name)| {
            if n == 0 {
                name.trim_start_matches('\u{feff}')
            } else {
                name
            }
        })
        .collect())
}

/// Reads one CSV row of at most [`MAX_ROW_BYTES`](crate::csv_rows::MAX_ROW_BYTES), skipping blank lines.
fn next_csv(
    rows: &mut CsvRows<BufReader<Box<dyn Read + Send>>>,
    headers: &csv::StringRecord,
    base_offset: u64,
    base_line: u64,
) -> Result<Option<Item>, String> {
    loop {
        let line = base_line + rows.newlines + 1;
        let row = rows
            .next_row()
            .map_err(|error| format!("cannot read the input: {error}"))?;
        let end = base_offset + rows.consumed;
        let (record, raw) = match row {
            None => return Ok(None),
            Some(Row::TooLarge(why)) => (Err(why), String::new()),
            Some(Row::Fields(fields)) => {
                // Blank lines are not records.
                if fields.len() == 1 && fields.get(0).is_some_and(<[u8]>::is_empty) {
                    continue;
                }
                match csv::StringRecord::from_byte_record(fields) {
                    Err(_) => (Err("the row is not UTF-8".to_owned()), String::new()),
                    Ok(row) => {
                        let raw: String = row.iter().collect::<Vec<_>>().join(",");
                        (Record::from_csv(headers, &row), cut(&raw))
                    }
                }
            }
        };
        return Ok(Some(Item {
            line,
            end,
            record,
            raw,
        }));
    }
}

/// The first 1 KiB of a record's text, for the dead-letter file.
fn cut(text: &str) -> String {
    text.chars().take(1024).collect()
}

/// Reads one NDJSON line of at most [`MAX_LINE_BYTES`], skipping blank lines.
fn next_ndjson(
    reader: &mut BufReader<Box<dyn Read + Send>>,
    offset: &mut u64,
    line: &mut u64,
) -> Result<Option<Item>, String> {
    loop {
        let mut text = Vec::new();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let buffer = reader
                .fill_buf()
                .map_err(|error| format!("cannot read the input: {error}"))?;
            if buffer.is_empty() {
                break;
            }
            read_any = true;
            let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
                Some(newline) => (&buffer[..=newline], true),
                None => (buffer, false),
            };
            if !too_long && text.len() + chunk.len() <= MAX_LINE_BYTES + 1 {
                text.extend_from_slice(chunk);
            } else {
                too_long = true;
                text.clear();
            }
            let consumed = chunk.len();
            reader.consume(consumed);
            *offset += consumed as u64;
            if done {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        *line += 1;
        if too_long {
            return Ok(Some(Item {
                line: *line,
                end: *offset,
                record: Err(format!("line is over {} KiB", MAX_LINE_BYTES / 1024)),
                raw: String::new(),
            }));
        }
        let Ok(text) = String::from_utf8(text) else {
            return Ok(Some(Item {
                line: *line,
                end: *offset,
                record: Err("line is not UTF-8".into()),
                raw: String::new(),
            }));
        };
        let trimmed = text.trim_start_matches('\u{feff}').trim();
        if trimmed.is_empty() {
            continue;
        }
        return Ok(Some(Item {
            line: *line,
            end: *offset,
            record: Record::from_json(trimmed),
            raw: cut(trimmed),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(name: &str, contents: &[u8], format: Format) -> Vec<Item> {
        let path = std::env::temp_dir().join(format!("pacer-input-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        let mut input = Input::open(Some(&path), format, &Start::default()).unwrap();
        let mut items = Vec::new();
        while let Some(item) = input.next_item().unwrap() {
            items.push(item);
        }
        std::fs::remove_file(&path).unwrap();
        items
    }

    #[test]
    fn ndjson_handles_bom_blank_lines_crlf_and_utf8() {
        let text = "\u{feff}{\"id\":\"é1\",\"city\":\"Zürich 🏔\"}\r\n\n   \n{\"person\":\"é1\",\"name\":\"paid\"}\n";
        let items = read_all("a.ndjson", text.as_bytes(), Format::Ndjson);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].line, 1);
        assert_eq!(items[1].line, 4);
        let Ok(Record::Person { id, attributes, .. }) = &items[0].record else {
            panic!("{:?}", items[0].record)
        };
        assert_eq!(id.as_deref(), Some("é1"));
        assert_eq!(attributes["city"], "Zürich 🏔");
        assert_eq!(items[1].end, text.len() as u64);
    }

    #[test]
    fn a_huge_line_is_an_error_and_reading_goes_on() {
        let mut text = b"{\"id\":\"1\"}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        text.extend(b"\n{\"id\":\"2\"}\n");
        let items = read_all("b.ndjson", &text, Format::Ndjson);
        assert_eq!(items.len(), 3);
        assert!(items[1]
            .record
            .as_ref()
            .unwrap_err()
            .contains("over 1024 KiB"));
        assert!(items[2].record.is_ok());
        assert_eq!(items[2].line, 3);
    }

    #[test]
    fn invalid_utf8_and_json_are_reported_with_their_line() {
        let items = read_all(
            "c.ndjson",
            b"{\"id\":\"1\"}\n\xff\xfe\n{oops\n",
            Format::Ndjson,
        );
        assert_eq!(items[1].line, 2);
        assert!(items[1].record.as_ref().unwrap_err().contains("UTF-8"));
        assert!(items[2]
            .record
            .as_ref()
            .unwrap_err()
            .contains("invalid JSON"));
    }

    #[test]
    fn csv_handles_bom_quotes_newlines_in_quotes_and_blank_lines() {
        let text = "\u{feff}id,email,note\n1,a@x.com,\"hello, world\"\n\n2,b@x.com,\"two\nlines\"\n3,c@x.com,\"\"\"quoted\"\"\"\n";
        let items = read_all("d.csv", text.as_bytes(), Format::Csv);
        assert_eq!(items.len(), 3, "{items:?}");
        let note = |item: &Item| match &item.record {
            Ok(Record::Person { attributes, .. }) => {
                attributes["note"].as_str().unwrap().to_owned()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(note(&items[0]), "hello, world");
        assert_eq!(note(&items[1]), "two\nlines");
        assert_eq!(note(&items[2]), "\"quoted\"");
        assert_eq!(items[2].end, text.len() as u64);
    }

    /// A 50 MB field is an invalid row, read past in bounded memory; the next row keeps its
    /// line number and the offsets stay exact.
    #[test]
    fn a_huge_csv_row_is_invalid_and_reading_goes_on() {
        let mut text = b"id,note\n1,a\n2,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 50_000_000));
        text.extend(b"\"\n3,c\n");
        let items = read_all("huge.csv", &text, Format::Csv);
        assert_eq!(items.len(), 3);
        assert!(items[1]
            .record
            .as_ref()
            .is_err_and(|why| why.contains("over 1024 KiB")));
        assert!(items[2].record.is_ok());
        assert_eq!((items[1].line, items[2].line), (3, 4));
        assert_eq!(items[2].end, text.len() as u64);
    }

    #[test]
    fn resuming_csv_starts_after_the_checkpoint() {
        let text = "id,plan\n1,a\n2,b\n3,c\n";
        let path = std::env::temp_dir().join(format!("pacer-input-{}-e.csv", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let mut first = Input::open(Some(&path), Format::Csv, &Start::default()).unwrap();
        let one = first.next_item().unwrap().unwrap();
        let start = Start {
            offset: one.end,
            line: one.line,
            headers: first.headers(),
        };
        let mut resumed = Input::open(Some(&path), Format::Csv, &start).unwrap();
        let two = resumed.next_item().unwrap().unwrap();
        let Ok(Record::Person { id, .. }) = &two.record else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("2"));
        assert_eq!(two.line, 3);
        std::fs::remove_file(&path).unwrap();
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any bytes read as NDJSON or CSV: no panic, offsets strictly increase and end at the
        /// file's length or before, line numbers increase.
        #[test]
        fn any_file_reads_without_panic(bytes in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b','), Just(b'"'), Just(b'{')], 0..400), csv in any::<bool>()) {
            let path = std::env::temp_dir().join(format!("pacer-input-prop-{}-{}", std::process::id(), csv));
            std::fs::write(&path, &bytes).unwrap();
            let format = if csv { Format::Csv } else { Format::Ndjson };
            if let Ok(mut input) = Input::open(Some(&path), format, &Start::default()) {
                let (mut last_end, mut last_line) = (0, 0);
                while let Ok(Some(item)) = input.next_item() {
                    prop_assert!(item.end > last_end || (csv && item.end >= last_end));
                    prop_assert!(item.end <= bytes.len() as u64);
                    prop_assert!(item.line >= last_line);
                    last_end = item.end;
                    last_line = item.line;
                }
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}
