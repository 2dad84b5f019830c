//! `kura-vault config`: the effective configuration, from a preset, a TOML file and flags.

use std::process::Command;

fn config(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kura-vault")).arg("config").args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn value(toml: &str, key: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing from:\n{toml}"))
        .to_string()
}

#[test]
fn defaults_come_from_the_production_preset() {
    let (ok, out, err) = config(&["--root", "/srv/kura"]);
    assert!(ok, "{err}");
    assert_eq!(value(&out, "root"), "\"/srv/kura\"");
    assert_eq!(value(&out, "capacity"), (50u64 << 30).to_string());
    assert_eq!(value(&out, "listen"), "[\"/ip4/0.0.0.0/udp/12000/quic-v1\"]");
    assert_eq!(value(&out, "audit_interval_secs"), "300");
    assert_eq!(value(&out, "maintenance_timeout_secs"), "10", "tuning values are settings too");
}

#[test]
fn a_file_overlays_its_preset_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault.toml");
    std::fs::write(&file, "preset = \"local\"\nroot = \"/from/file\"\ncapacity = \"2GiB\"\naudit_interval_secs = 99\n").unwrap();
    let (ok, out, err) = config(&["--config", file.to_str().unwrap(), "--audit-interval", "7"]);
    assert!(ok, "{err}");
    assert_eq!(value(&out, "root"), "\"/from/file\"");
    assert_eq!(value(&out, "capacity"), (2u64 << 30).to_string());
    assert_eq!(value(&out, "audit_interval_secs"), "7", "the flag wins over the file");
    assert_eq!(value(&out, "listen"), "[\"/ip4/127.0.0.1/udp/0/quic-v1\"]", "the rest is the local preset's");
    // What `config` prints reads back as the same configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let (ok, again, err) = config(&["--config", printed.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(again, out);
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "root = \"/r\"\ncapacty = 5\n").unwrap();
    let (ok, _, err) = config(&["--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("capacty"), "names the unknown setting: {err}");
    let (ok, _, err) = config(&[]);
    assert!(!ok);
    assert!(err.contains("--root"), "{err}");
    let (ok, _, err) = config(&["--root", "/r", "--preset", "huge"]);
    assert!(!ok);
    assert!(err.contains("huge"), "{err}");
}
