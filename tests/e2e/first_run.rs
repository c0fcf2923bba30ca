//! The README's test command works on a fresh machine by itself: `scripts/test` provisions
//! the system packages the tests need before it runs them, CI runs exactly that command, and
//! the README's toolchain line agrees with Cargo.toml.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The non-comment, non-empty lines of a shell script.
fn commands(script: &str) -> Vec<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn scripts_test_provisions_the_system_packages_before_the_tests() {
    let test = commands(&read("scripts/test"));
    let position = |needle: &str| {
        test.iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {test:?}"))
    };
    assert!(position("scripts/test-deps") < position("cargo test --workspace --all-targets"), "{test:?}");
    assert!(position("cargo test") < position("scripts/python-test"), "{test:?}");

    // CI: formatting, lints, proto lint, then exactly scripts/test, which provisions by itself.
    let ci = commands(&read(".ci/run"));
    assert_eq!(ci.last().map(String::as_str), Some("scripts/test"), "{ci:?}");
    assert!(!ci.iter().any(|l| l.contains("apt-get") || l.contains("test-deps")), "{ci:?}");

    // Every tool a test runs has its package and probe in the list.
    let output = Command::new("bash").arg(repo().join("scripts/test-deps")).arg("--list").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 3), "PACKAGE<TAB>PROBE<TAB>WHY:\n{listed}");
    for (package, tool) in
        [("libxml2-utils", "xmllint"), ("python3-venv", "venv"), ("systemd", "systemd-analyze")]
    {
        assert!(
            rows.iter().any(|r| r[0] == package && r[1].contains(tool)),
            "{package} ({tool}) not in\n{listed}"
        );
    }
}

#[test]
fn the_readme_names_the_toolchain_cargo_toml_requires() {
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("workspace rust-version");
    let readme = read("README.md");
    let line =
        readme.lines().find(|l| l.starts_with("Needs only the Rust toolchain")).expect("the needs-only line");
    assert!(
        line.contains(&format!("{rust_version} or newer")),
        "README says {line:?}; Cargo.toml {rust_version}"
    );
    assert!(
        readme.contains("`scripts/test` installs what the tests need"),
        "the README says what scripts/test installs"
    );
}
