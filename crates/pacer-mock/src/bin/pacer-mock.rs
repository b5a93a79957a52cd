//! The mock Customer.io server as a process:
//!
//! ```text
//! pacer-mock [--port 0] [--track-limit 100] [--app-limit 10] [--model sliding|gcra|fixed]
//!            [--faults 0.05] [--drop-after 0.02] [--latency-ms 0] [--seed 0]
//! ```
//!
//! Prints the base URL, then serves until interrupted; on Ctrl-C prints the ledger's counts.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use pacer_mock::{Api, Faults, Limit, MockConfig, MockServer, ServerModel};

const USAGE: &str = "usage: pacer-mock [--port N] [--track-limit N] [--app-limit N] \
                     [--model sliding|gcra|fixed] [--faults F] [--drop-after F] [--latency-ms N] [--seed N]";

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    /// Serve with this configuration on this port.
    Serve(Box<MockConfig>, u16),
    /// Print the usage and exit successfully (`--help`, `-h`).
    Help,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (config, port) = match parse(std::env::args().skip(1)) {
        Ok(Command::Serve(config, port)) => (*config, port),
        Ok(Command::Help) => {
            println!("{USAGE}");
            println!("Prints the base URL, then serves until interrupted; on Ctrl-C prints the ledger's counts.");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("pacer-mock: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockServer::bind(config, SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(mock) => mock,
        Err(error) => {
            eprintln!("pacer-mock: cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", mock.base_url());
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("{:?}", mock.ledger().counts());
    ExitCode::SUCCESS
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = MockConfig::default();
    let mut port = 0;
    let mut model = ServerModel::SlidingWindow;
    let mut track = 100;
    let mut app = 10;
    let mut faults = Faults::default();
    while let Some(flag) = args.next() {
        // A flag without a value: checked before one is taken, or `--help` "needs a value".
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| {
            value
                .parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|_| format!("bad port {value:?}"))?,
            "--track-limit" => track = value.parse().map_err(|_| format!("bad limit {value:?}"))?,
            "--app-limit" => app = value.parse().map_err(|_| format!("bad limit {value:?}"))?,
            "--model" => {
                model = match value.as_str() {
                    "sliding" => ServerModel::SlidingWindow,
                    "gcra" => ServerModel::Gcra,
                    "fixed" => ServerModel::FixedWindow,
                    other => return Err(format!("unknown model {other:?}")),
                }
            }
            "--faults" => faults.server_errors = number(&value)?,
            "--drop-after" => faults.drop_after = number(&value)?,
            "--latency-ms" => faults.latency = Duration::from_millis(number(&value)? as u64),
            "--seed" => {
                config = config.seed(value.parse().map_err(|_| format!("bad seed {value:?}"))?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let config = config
        .limit(Api::Track, Some(Limit::per_second(track).model(model)))
        .limit(Api::App, Some(Limit::per_second(app).model(model)))
        .faults(faults);
    Ok(Command::Serve(Box::new(config), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn help_prints_usage_wherever_it_is() {
        for args in [&["--help"][..], &["-h"], &["--port", "0", "--help"]] {
            assert!(matches!(parse_args(args), Ok(Command::Help)), "{args:?}");
        }
        assert!(matches!(
            parse_args(&["--port", "8080"]),
            Ok(Command::Serve(_, 8080))
        ));
        assert_eq!(parse_args(&["--port"]).unwrap_err(), "--port needs a value");
    }
}
