//! The command-line values the pacing benchmarks share (`pace_http`, `real_servers`).

/// `--seconds`: a whole number of seconds per run, from 1 to 600.
pub(crate) fn seconds(value: &str) -> Result<u32, String> {
    value
        .parse()
        .ok()
        .filter(|s| (1..=600).contains(s))
        .ok_or_else(|| "--seconds takes a whole number from 1 to 600".to_owned())
}

/// `--tasks`: a comma-separated list of task counts, each from 1 to 1000.
pub(crate) fn tasks(value: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|n| n.trim().parse().ok().filter(|n| (1..=1000).contains(n)))
        .collect::<Option<_>>()
        .ok_or_else(|| "--tasks takes a comma-separated list of numbers from 1 to 1000".to_owned())
}
