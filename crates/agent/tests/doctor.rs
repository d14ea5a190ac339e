//! `vdesk-agent doctor` as an operator runs it (the real binary, its flags and environment)
//! against a real controller (in this process), a real Xvfb and a coturn started here: healthy
//! with the right secret (exit 0, every check of the display, encoders, controller, clock, STUN
//! and TURN ok, the VM not registered); FAIL with its fix for a display that is not there, a
//! wrong agent secret, a certificate the agent does not trust, and a TURN secret coturn does not
//! share; the JSON report's shape. coturn is /usr/bin/turnserver (or $VDESK_TURNSERVER): without
//! it the TURN tests skip, or fail under CI=true.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vdesk_controller::{AgentToken, AppState};
use vdesk_protocol::{IceServer, VmId};

const VM: &str = "doctor-vm";
const TURN_SECRET: &str = "doctor-turn-secret-0123456789abcdef";

/// A real controller on a free port; `edit` changes its configuration first.
async fn controller(
    edit: impl FnOnce(&mut vdesk_controller::Config),
) -> (AppState, u16, String, tokio::sync::oneshot::Sender<()>) {
    let mut config =
        vdesk_controller::Config::new(AgentToken::new("doctor-shared-agent-token-0123456"));
    edit(&mut config);
    let secret = config.secret.agent_secret(&VmId::new(VM).unwrap());
    let state = AppState::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(vdesk_controller::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    (state, port, secret, stop)
}

/// Runs `vdesk-agent FLAGS doctor --json` with the agent secret in the environment.
async fn doctor(flags: Vec<String>, token: &str) -> (i32, Value, String) {
    let token = token.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let empty =
            std::env::temp_dir().join(format!("vdesk-doctor-agent-{}.toml", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        Command::new(env!("CARGO_BIN_EXE_vdesk-agent"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VDESK_AGENT_TOKEN", token)
            .arg("--config")
            .arg(&empty)
            .args(&flags)
            .args(["doctor", "--json"])
            .output()
            .unwrap()
    })
    .await
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

fn flags(port: u16, display: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--controller",
        &format!("http://127.0.0.1:{port}"),
        "--vm-id",
        VM,
        "--display",
        display,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// coturn with `use-auth-secret` on a free UDP port of this host's address, killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// None (after saying so) when coturn is not installed and this is not CI.
fn coturn() -> Option<Coturn> {
    let bin = std::env::var("VDESK_TURNSERVER").unwrap_or_else(|_| "/usr/bin/turnserver".into());
    if !std::path::Path::new(&bin).exists() {
        assert!(
            !ci(),
            "{bin} is missing: apt-get install coturn (scripts/deps.sh does); CI=true"
        );
        eprintln!("SKIP: {bin} is missing (apt-get install coturn)");
        return None;
    }
    // A host address: the agent's checks go where a deployment's would, not to loopback.
    let ip = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or([127, 0, 0, 1].into());
    let port = {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.local_addr().unwrap().port()
    };
    let relay = 40000 + (std::process::id() % 200) * 100;
    #[allow(clippy::zombie_processes)] // waited for in Drop
    let child = Command::new(&bin)
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--fingerprint",
            "--use-auth-secret",
            &format!("--static-auth-secret={TURN_SECRET}"),
            "--realm=vdesk.test",
            &format!("--listening-ip={ip}"),
            &format!("--relay-ip={ip}"),
            &format!("--listening-port={port}"),
            &format!("--min-port={relay}"),
            &format!("--max-port={}", relay + 99),
            "--log-file=stdout",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::new(ip, port);
    // Ready when it answers a STUN binding request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt
        .block_on(vdesk_agent::doctor::stun::binding(addr))
        .is_err()
    {
        assert!(Instant::now() < deadline, "coturn did not answer on {addr}");
    }
    Some(Coturn { child, addr })
}

fn with_turn(c: &mut vdesk_controller::Config, addr: SocketAddr, secret: &str) {
    c.ice_servers = vec![IceServer {
        urls: vec![format!("stun:{addr}")],
        username: None,
        credential: None,
    }];
    c.turn = Some(vdesk_controller::turn::TurnRest::new(
        vec![format!("turn:{addr}?transport=udp")],
        secret,
        Duration::from_secs(3600),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_vm_passes_every_check_without_registering() {
    let Some(turn) = tokio::task::spawn_blocking(coturn).await.unwrap() else {
        return;
    };
    let x = common::Xvfb::start();
    let (state, port, secret, _stop) = controller(|c| with_turn(c, turn.addr, TURN_SECRET)).await;
    let (code, report, text) = doctor(flags(port, &x.display, &[]), &secret).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["program"], "vdesk-agent");
    assert_eq!(report["healthy"], true);
    for c in report["checks"].as_array().unwrap() {
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert_eq!(c["fix"].is_string(), c["status"] != "ok", "{c}");
    }
    for name in [
        "config",
        "display",
        "x-extensions",
        "gstreamer",
        "encoders.software",
        "encoders.chosen",
        "controller",
        "secret",
        "clock",
        "stun",
        "turn",
    ] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert!(check(&report, "x-extensions")["detail"]
        .as_str()
        .unwrap()
        .contains("XTEST, DAMAGE, XFIXES, RANDR"));
    assert!(check(&report, "turn")["detail"]
        .as_str()
        .unwrap()
        .contains("allocated a relay"));
    assert!(!text.contains(&secret), "the agent secret was printed");
    // The check registered nothing: viewers see no such VM.
    let vms = state.relay(|r, _| r.vms());
    assert!(vms.iter().all(|v| v.vm_id.as_str() != VM), "{vms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_display_and_a_wrong_secret_fail_with_their_fix() {
    let (_state, port, _secret, _stop) = controller(|_| {}).await;
    // A display number no X server has.
    let (code, report, _) =
        doctor(flags(port, ":1999", &[]), "not-this-vms-secret-0123456789").await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["healthy"], false);
    let d = check(&report, "display");
    assert_eq!(d["status"], "fail", "{d}");
    assert!(d["detail"].as_str().unwrap().contains(":1999"), "{d}");
    assert!(
        d["fix"].as_str().unwrap().contains("start the X server"),
        "{d}"
    );
    let s = check(&report, "secret");
    assert_eq!(s["status"], "fail", "{s}");
    assert!(
        s["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("vdesk-controller agent-secret --vm {VM}")),
        "{s}"
    );
    assert_eq!(check(&report, "controller")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_with_the_pinning_fix() {
    let dir = std::env::temp_dir().join(format!("vdesk-doctor-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let tls =
        vdesk_controller::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let (_state, port, secret, _stop) = controller(|c| c.tls = Some(tls)).await;
    let mut f = flags(port, ":1999", &["--cert-sha256", &"ab".repeat(32)]);
    f[1] = format!("https://127.0.0.1:{port}");
    let (code, report, _) = doctor(f, &secret).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1);
    let t = check(&report, "tls");
    assert_eq!(t["status"], "fail", "{report:#}");
    assert!(t["detail"].as_str().unwrap().contains("fingerprint"), "{t}");
    assert!(
        t["fix"]
            .as_str()
            .unwrap()
            .contains("openssl x509 -noout -fingerprint -sha256"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_secret_coturn_does_not_share_fails() {
    let Some(turn) = tokio::task::spawn_blocking(coturn).await.unwrap() else {
        return;
    };
    let (_state, port, secret, _stop) =
        controller(|c| with_turn(c, turn.addr, "another-turn-secret-0123456789")).await;
    let (code, report, _) = doctor(flags(port, ":1999", &[]), &secret).await;
    assert_eq!(code, 1);
    assert_eq!(check(&report, "stun")["status"], "ok", "{report:#}");
    let t = check(&report, "turn");
    assert_eq!(t["status"], "fail", "{t}");
    assert!(t["detail"].as_str().unwrap().contains("401"), "{t}");
    assert!(
        t["fix"].as_str().unwrap().contains("static-auth-secret"),
        "{t}"
    );
}
