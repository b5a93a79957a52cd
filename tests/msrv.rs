//! The declared `rust-version` is the true one: no crate that a published pacer crate builds
//! on (normal and build dependencies, every feature, as locked) needs a newer Rust. Without
//! this check the declaration drifts as dependencies update (it said 1.85 while the locked
//! `reqwest` and `redis` paths needed 1.88).

use std::collections::{HashMap, HashSet};
use std::process::Command;

use serde_json::Value;

/// `1.85` and `1.85.0` alike, as three numbers.
fn version(text: &str) -> [u64; 3] {
    let mut parts = text
        .split('.')
        .map(|part| part.parse().expect("a numeric rust-version"));
    [0; 3].map(|_| parts.next().unwrap_or(0))
}

/// This machine's target triple: dependencies of other platforms (wasm, Windows) do not count.
fn host() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

#[test]
fn no_locked_dependency_needs_a_newer_rust_than_declared() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--all-features",
        ])
        .args(["--filter-platform", &host()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| (package["id"].as_str().unwrap(), package))
        .collect();
    let declared = packages
        .values()
        .find(|package| package["name"] == "pacer")
        .and_then(|package| package["rust_version"].as_str())
        .expect("pacer declares a rust-version");
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["id"].as_str().unwrap(), node))
        .collect();
    // Published members only (`publish = false` reads as an empty list).
    let mut stack: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .filter(|id| packages[id]["publish"] != Value::Array(vec![]))
        .collect();
    let mut seen: HashSet<&str> = stack.iter().copied().collect();
    let mut too_new = Vec::new();
    while let Some(id) = stack.pop() {
        let package = packages[id];
        if let Some(needs) = package["rust_version"].as_str() {
            if version(needs) > version(declared) {
                too_new.push(format!(
                    "{} {} needs {needs}",
                    package["name"], package["version"]
                ));
            }
        }
        for dependency in nodes[id]["deps"].as_array().unwrap() {
            let built_on = dependency["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind["kind"].is_null() || kind["kind"] == "build");
            let next = dependency["pkg"].as_str().unwrap();
            if built_on && seen.insert(next) {
                stack.push(next);
            }
        }
    }
    too_new.sort();
    assert!(
        too_new.is_empty(),
        "declared rust-version {declared}, but: {}",
        too_new.join("; ")
    );
    assert!(
        seen.len() > 50,
        "walked the dependency tree ({} crates)",
        seen.len()
    );
}
