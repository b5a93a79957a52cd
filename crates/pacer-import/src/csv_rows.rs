//! CSV rows read with `csv-core` into fixed buffers: a row over [`MAX_ROW_BYTES`] (one huge
//! field, or an unclosed quote that would swallow the rest of the file) or with more than
//! [`MAX_FIELDS`] fields is reported as too large while it is skipped, never held in memory.
//! The `csv` crate's reader grows its record buffer without bound, so it cannot do this.

use std::io::{self, BufRead};

/// The largest CSV row read, as for an NDJSON line; a larger one is an invalid record.
pub const MAX_ROW_BYTES: usize = 1024 * 1024;

/// The most fields a CSV row may have (Customer.io accepts at most 300 attributes).
pub const MAX_FIELDS: usize = 4096;

/// One row as read.
#[derive(Debug)]
pub(crate) enum Row {
    /// The row's fields (not yet checked for UTF-8).
    Fields(csv::ByteRecord),
    /// The row was skipped: it is over a cap, said how.
    TooLarge(String),
}

/// Which cap a row went over.
#[derive(Clone, Copy, Debug)]
enum Overflow {
    Bytes,
    Fields,
}

/// A CSV row reader over any buffered source, counting bytes and lines as it goes.
pub(crate) struct CsvRows<R> {
    source: R,
    parser: csv_core::Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes consumed from the source.
    pub(crate) consumed: u64,
    /// Newlines consumed from the source.
    pub(crate) newlines: u64,
}

impl<R: BufRead> CsvRows<R> {
    pub(crate) fn new(source: R) -> Self {
        Self {
            source,
            parser: csv_core::Reader::new(),
            output: vec![0; MAX_ROW_BYTES],
            ends: vec![0; MAX_FIELDS],
            consumed: 0,
            newlines: 0,
        }
    }

    /// The next row, `None` at the end of the input.
    ///
    /// # Errors
    /// When reading the source fails.
    pub(crate) fn next_row(&mut self) -> io::Result<Option<Row>> {
        let (mut written, mut fields) = (0, 0);
        let mut too_large: Option<Overflow> = None;
        loop {
            let input = self.source.fill_buf()?;
            let (result, read, wrote, ended) = self.parser.read_record(
                input,
                &mut self.output[written..],
                &mut self.ends[fields..],
            );
            self.newlines += input[..read].iter().filter(|&&b| b == b'\n').count() as u64;
            self.consumed += read as u64;
            self.source.consume(read);
            written += wrote;
            fields += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                // Over a cap: keep parsing to the row's end (quotes decide where it is), dropping
                // what it holds.
                csv_core::ReadRecordResult::OutputFull => {
                    too_large.get_or_insert(Overflow::Bytes);
                    written = 0;
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    too_large.get_or_insert(Overflow::Fields);
                    fields = 0;
                }
                csv_core::ReadRecordResult::End => return Ok(None),
                csv_core::ReadRecordResult::Record => {
                    return Ok(Some(self.finish(too_large, written, fields)));
                }
            }
        }
    }

    fn finish(&self, too_large: Option<Overflow>, written: usize, fields: usize) -> Row {
        match too_large {
            Some(Overflow::Fields) => {
                Row::TooLarge(format!("the row has over {MAX_FIELDS} fields"))
            }
            Some(Overflow::Bytes) => Row::TooLarge(format!(
                "the row is over {} KiB (an unclosed quote runs to the end of the file)",
                MAX_ROW_BYTES / 1024
            )),
            None => {
                let mut record = csv::ByteRecord::with_capacity(written, fields);
                let mut start = 0;
                for &end in &self.ends[..fields] {
                    record.push_field(&self.output[start..end]);
                    start = end;
                }
                Row::Fields(record)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(bytes: &[u8]) -> Vec<Row> {
        let mut reader = CsvRows::new(io::BufReader::with_capacity(64, bytes));
        std::iter::from_fn(|| reader.next_row().unwrap()).collect()
    }

    fn fields(row: &Row) -> Vec<String> {
        match row {
            Row::Fields(record) => record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
            Row::TooLarge(why) => panic!("too large: {why}"),
        }
    }

    #[test]
    fn quotes_newlines_and_a_missing_final_newline() {
        let rows = rows(b"a,\"b,\nc\",\"\"\"q\"\"\"\r\nx,y,z");
        assert_eq!(fields(&rows[0]), ["a", "b,\nc", "\"q\""]);
        assert_eq!(fields(&rows[1]), ["x", "y", "z"]);
        assert_eq!(rows.len(), 2);
    }

    /// A 3 MiB field is skipped with a reason; the rows around it are read, and the buffer
    /// never grows past its cap.
    #[test]
    fn a_huge_field_is_skipped_and_reading_goes_on() {
        let mut text = b"1,a\n2,".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_ROW_BYTES));
        text.extend(b"\n3,c\n");
        let mut reader = CsvRows::new(io::BufReader::new(&text[..]));
        let mut read = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            read.push(row);
            assert_eq!(reader.output.capacity(), MAX_ROW_BYTES);
        }
        assert_eq!(fields(&read[0]), ["1", "a"]);
        assert!(matches!(&read[1], Row::TooLarge(why) if why.contains("over 1024 KiB")));
        assert_eq!(fields(&read[2]), ["3", "c"]);
        assert_eq!(reader.consumed, text.len() as u64);
        assert_eq!(reader.newlines, 3);
    }

    #[test]
    fn an_unclosed_quote_is_one_row_too_large_not_the_whole_file_in_memory() {
        let mut text = b"1,\"open\n".to_vec();
        for n in 0..200_000 {
            text.extend(format!("{n},row\n").as_bytes());
        }
        let read = rows(&text);
        assert_eq!(read.len(), 1);
        assert!(matches!(&read[0], Row::TooLarge(_)));
    }

    #[test]
    fn too_many_fields_is_too_large() {
        let text = ",".repeat(MAX_FIELDS + 5) + "\n1,2\n";
        let read = rows(text.as_bytes());
        assert!(matches!(&read[0], Row::TooLarge(why) if why.contains("fields")));
        assert_eq!(fields(&read[1]), ["1", "2"]);
    }
}
