//! `--generate N`: a realistic input of `N` records (people, each followed by a sign-up event),
//! written to a file line by line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::json;

const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const COUNTRIES: [&str; 6] = ["US", "DE", "FR", "BR", "JP", "IN"];

/// Writes `records` NDJSON records to `path`: half people, half their `signed_up` events.
///
/// # Errors
/// When the file cannot be written.
pub fn generate(path: &Path, records: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let base = 1_700_000_000_u64;
    for n in 0..records {
        let person = n / 2;
        let line = if n % 2 == 0 {
            json!({
                "type": "person",
                "id": format!("user-{person:08}"),
                "email": format!("user{person}@example.com"),
                "attributes": {
                    "plan": PLANS[(person % 4) as usize],
                    "country": COUNTRIES[(person % 6) as usize],
                    "created_at": base + person,
                }
            })
        } else {
            json!({
                "type": "event",
                "person": format!("user-{person:08}"),
                "name": "signed_up",
                "timestamp": base + person,
                "data": {"source": if person % 3 == 0 { "ads" } else { "organic" }}
            })
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    out.get_ref().sync_all()
}
