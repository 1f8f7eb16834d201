//! The `oxidex` binary: check-config and version, as a user runs them.

use std::process::Command;

fn oxidex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxidex"))
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn check_config_accepts_the_dev_example_and_redacts_secrets() {
    let output = oxidex()
        .arg("check-config")
        .arg(repo_file("examples/config-dev.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let effective: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(effective["issuer"]["url"], "http://127.0.0.1:5556/dex");
    assert!(
        !stdout.contains("ZXhhbXBsZS1hcHAtc2VjcmV0"),
        "client secret leaked:\n{stdout}"
    );
    assert!(
        !stdout.contains("$2b$10$"),
        "password hash leaked:\n{stdout}"
    );
}

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"storage": {"type": "sqlite3", "config": {}}, "web": {},
            "staticClients": [{"id": "a", "secret": "s", "redirectURIs": []}],
            "connectors": []}"#,
    )
    .unwrap();
    let output = oxidex().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for path in [
        "issuer",
        "storage.config.file",
        "web",
        "staticClients[0].name",
    ] {
        assert!(
            stderr.contains(path),
            "no problem mentions {path}:\n{stderr}"
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    let output = oxidex().arg("version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("oxidex {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `oxidex check-config … | head -0`: the reader is gone before anything is written.
#[test]
fn check_config_into_a_closed_pipe_does_not_panic() {
    let mut child = oxidex()
        .arg("check-config")
        .arg(repo_file("examples/config-dev.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
