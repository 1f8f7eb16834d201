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
    // Dex's own schema: camelCase keys, Go durations, defaults filled in.
    assert_eq!(effective["issuer"], "http://127.0.0.1:5556/dex");
    assert_eq!(effective["expiry"]["idTokens"], "24h");
    assert_eq!(
        effective["staticClients"][0]["redirectURIs"][0],
        "http://127.0.0.1:5555/callback"
    );
    assert_eq!(effective["staticClients"][0]["secret"], "<redacted>");
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

/// Runs `oxidex serve` on the dev example with `logger` until it logs
/// "listening" and "signing keys loaded" (generated after the listeners open
/// on this fresh storage), and returns its stderr.
fn serve_logs(logger: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo_file("examples/config-dev.json")).unwrap())
            .unwrap();
    config["storage"] = serde_json::json!({"type": "memory"});
    config["web"] = serde_json::json!({"http": "127.0.0.1:0"});
    config.as_object_mut().unwrap().remove("telemetry");
    config["logger"] = logger;
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = oxidex()
        .arg("serve")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let started = text.contains("listening") && text.contains("signing keys loaded");
        if started || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn logger_exclude_fields_drops_the_named_attributes_in_both_formats() {
    let json =
        serve_logs(serde_json::json!({"format": "json", "excludeFields": ["kid", "address"]}));
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let keys = records
        .iter()
        .find(|r| r["message"] == "signing keys loaded")
        .expect(&json);
    assert!(
        keys.get("kid").is_none() && keys.get("algorithm").is_some(),
        "{keys}"
    );
    let listening = records
        .iter()
        .find(|r| r["message"] == "listening")
        .expect(&json);
    assert!(
        listening.get("address").is_none() && listening.get("issuer").is_some(),
        "{listening}"
    );

    let text =
        serve_logs(serde_json::json!({"format": "text", "excludeFields": ["kid", "address"]}));
    let line = text
        .lines()
        .find(|l| l.contains("signing keys loaded"))
        .expect(&text);
    assert!(
        !line.contains(" kid=") && line.contains("algorithm="),
        "{line}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(" listening"))
        .expect(&text);
    assert!(
        !line.contains("address=") && line.contains("issuer="),
        "{line}"
    );

    // Without the setting every attribute is there.
    let all = serve_logs(serde_json::json!({"format": "text"}));
    assert!(all.contains(" kid=") && all.contains("address="), "{all}");
}
