//! `vdesk-controller doctor` as an operator runs it (the real binary, flags and environment):
//! a healthy configuration exits 0 and never prints its secrets; an expired certificate, a key
//! of another certificate, a missing secret, a listen address taken by another program and
//! TURN settings that do not go together each give a FAIL line with its fix and exit 1; a
//! running controller on the listen address is fine; the JSON report has the documented shape.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{CertificateParams, KeyPair};
use serde_json::Value;

const SECRET: &str = "doctor-test-secret-0123456789abcdef0123456789";
const ADMIN: &str = "doctor-test-admin-0123456789abcdef";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("vdesk-doctor-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    // An empty config file, so that no /etc/vdesk/controller.toml of this machine is read.
    std::fs::write(d.join("controller.toml"), "").unwrap();
    Dir(d)
}

/// A certificate for 127.0.0.1 valid from `from` to `until` (years), and its key, in `d`.
fn cert(d: &Path, from: i32, until: i32) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let c = params.self_signed(&key).unwrap();
    let (cp, kp) = (
        d.join(format!("cert-{until}.pem")),
        d.join(format!("key-{until}.pem")),
    );
    std::fs::write(&cp, c.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    (cp, kp)
}

/// Runs `vdesk-controller FLAGS doctor --json` with only `env` in the environment.
fn doctor(d: &Dir, flags: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vdesk-controller"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .arg("--config")
        .arg(d.0.join("controller.toml"))
        .args(flags)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json, text)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_healthy_configuration_exits_0_and_never_prints_a_secret() {
    let d = dir("healthy");
    let (c, k) = cert(&d.0, 2020, 2090);
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--listen",
        &listen,
        "--tls-cert",
        c.to_str().unwrap(),
        "--tls-key",
        k.to_str().unwrap(),
        "--public-url",
        "https://localhost:8443",
        "--turn-server",
        "turn:127.0.0.1:3478?transport=udp",
        "--stun-server",
        "stun:127.0.0.1:3478",
    ];
    let env = [
        ("VDESK_SECRET", SECRET),
        ("VDESK_ADMIN_TOKEN", ADMIN),
        ("VDESK_TURN_SECRET", "doctor-turn-secret-0123456789"),
    ];
    let (code, report, text) = doctor(&d, &flags, &env);
    assert_eq!(code, 0, "{report:#}");
    // The documented shape.
    assert_eq!(report["program"], "vdesk-controller");
    assert!(report["version"].is_string());
    assert_eq!(report["healthy"], true);
    for c in report["checks"].as_array().unwrap() {
        assert!(c["name"].is_string() && c["detail"].is_string(), "{c}");
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert_eq!(c["fix"].is_string(), c["status"] != "ok", "{c}");
    }
    for name in [
        "config",
        "secret",
        "admin-token",
        "listen",
        "tls",
        "turn",
        "public-url",
    ] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert!(check(&report, "tls")["detail"]
        .as_str()
        .unwrap()
        .contains("matches its key"));
    for secret in [SECRET, ADMIN, "doctor-turn-secret-0123456789"] {
        assert!(!text.contains(secret), "a secret was printed: {text}");
    }
}

#[test]
fn an_expired_certificate_and_a_foreign_key_fail_with_their_fix() {
    let d = dir("tls");
    let (old_cert, old_key) = cert(&d.0, 2000, 2001);
    let (new_cert, _) = cert(&d.0, 2020, 2090);
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("VDESK_SECRET", SECRET)];
    let tls = |c: &Path, k: &Path| {
        let flags = [
            "--listen",
            &listen,
            "--tls-cert",
            c.to_str().unwrap(),
            "--tls-key",
            k.to_str().unwrap(),
        ];
        doctor(&d, &flags, &env)
    };
    let (code, report, _) = tls(&old_cert, &old_key);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["healthy"], false);
    let t = check(&report, "tls");
    assert_eq!(t["status"], "fail");
    assert!(t["detail"].as_str().unwrap().contains("expired"), "{t}");
    assert!(t["fix"].as_str().unwrap().contains("renew"), "{t}");
    let (code, report, _) = tls(&new_cert, &old_key);
    assert_eq!(code, 1);
    let t = check(&report, "tls");
    assert_eq!(t["status"], "fail");
    assert!(
        t["detail"].as_str().unwrap().contains("do not go together"),
        "{t}"
    );
}

#[test]
fn missing_secret_taken_port_and_turn_mismatch_fail() {
    let d = dir("fails");
    // Another program on the listen address (it accepts, but is no vdesk controller).
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = squatter.local_addr().unwrap().to_string();
    let (code, report, _) = doctor(
        &d,
        &["--listen", &listen, "--turn-secret", "x-0123456789abcdef"],
        &[],
    );
    assert_eq!(code, 1);
    let s = check(&report, "secret");
    assert_eq!(s["status"], "fail");
    assert!(
        s["fix"].as_str().unwrap().contains("openssl rand -hex 32"),
        "{s}"
    );
    let l = check(&report, "listen");
    assert_eq!(l["status"], "fail", "{l}");
    assert!(l["fix"].as_str().unwrap().contains("ss -ltnp"), "{l}");
    let t = check(&report, "turn");
    assert_eq!(t["status"], "fail", "{t}");
    assert!(
        t["detail"].as_str().unwrap().contains("no --turn-server"),
        "{t}"
    );
    drop(squatter);
}

#[test]
fn a_running_controller_on_the_listen_address_is_fine() {
    let d = dir("running");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_vdesk-controller"))
        .env_clear()
        .env("VDESK_SECRET", SECRET)
        .arg("--config")
        .arg(d.0.join("controller.toml"))
        .args(["--listen", &listen])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "controller did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, report, _) = doctor(&d, &["--listen", &listen], &[("VDESK_SECRET", SECRET)]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 0, "{report:#}");
    let l = check(&report, "listen");
    assert_eq!(l["status"], "ok", "{l}");
    assert!(
        l["detail"]
            .as_str()
            .unwrap()
            .contains("running vdesk controller"),
        "{l}"
    );
}

#[test]
fn an_unreadable_config_file_is_a_failing_check() {
    let d = dir("badfile");
    std::fs::write(d.0.join("controller.toml"), "listen = [").unwrap();
    let (code, report, _) = doctor(&d, &[], &[]);
    assert_eq!(code, 1);
    let c = check(&report, "config");
    assert_eq!(c["status"], "fail");
    assert!(
        c["detail"].as_str().unwrap().contains("not valid TOML"),
        "{c}"
    );
}
