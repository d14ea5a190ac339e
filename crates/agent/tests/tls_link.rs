//! The agent's controller link over TLS, against the real controller serving `--tls-cert` with a
//! CA and a certificate made in the test (rcgen): the agent registers when it pins the CA or the
//! certificate's fingerprint, and refuses a wrong fingerprint or another CA with a clear error.
//! The registration itself goes through the challenge-response hello. No X display is needed:
//! nothing here gets an offer.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use vdesk_agent::config::{Args, Config};
use vdesk_controller::{AgentToken, AppState};
use vdesk_protocol::VmId;

const TOKEN: &str = "tls-link-shared-agent-token-0123";

/// A CA, and a certificate for 127.0.0.1 and localhost that it signed, in PEM files.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    leaf_sha256: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("vdesk-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "vdesk test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        leaf_sha256: Sha256::digest(leaf.der())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        dir,
    };
    std::fs::write(&p.ca, ca.as_ref().pem()).unwrap();
    std::fs::write(&p.cert, leaf.pem()).unwrap();
    std::fs::write(&p.key, leaf_key.serialize_pem()).unwrap();
    p
}

/// A real controller serving TLS with `pki`'s certificate on a free port.
async fn controller(pki: &Pki) -> (AppState, u16, tokio::sync::oneshot::Sender<()>) {
    let mut config = vdesk_controller::Config::new(AgentToken::new(TOKEN));
    config.tls = Some(vdesk_controller::tls::server_config(&pki.cert, &pki.key).unwrap());
    let state = AppState::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(vdesk_controller::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    (state, port, stop)
}

fn agent_config(controller: &str, extra: &[&str]) -> Config {
    let mut argv = vec![
        "vdesk-agent",
        "--controller",
        controller,
        "--vm-id",
        "demo",
        "--token",
        TOKEN,
    ];
    argv.extend_from_slice(extra);
    Config::from_args(&Args::try_parse_from(argv).unwrap(), Some(":0".into())).unwrap()
}

fn online(state: &AppState) -> bool {
    state
        .relay(|r, _| r.vm(&VmId::new("demo").unwrap()))
        .is_some_and(|v| v.online)
}

/// Runs the agent's links until the controller shows the VM online and its media link up (the
/// WebSocket fallback's, over the same TLS) (or 10 s pass), then stops them.
async fn registers(state: &AppState, config: Config) -> bool {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let link = tokio::spawn(vdesk_agent::signalling::run(config, async {
        let _ = stopped.await;
    }));
    let mut ok = false;
    for _ in 0..200 {
        if online(state) && state.wsmedia().has_link(&VmId::new("demo").unwrap()) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the link stops on shutdown")
        .unwrap()
        .unwrap();
    ok
}

#[tokio::test]
async fn agent_registers_over_wss_with_the_pinned_ca() {
    let pki = pki("ca");
    let (state, port, _stop) = controller(&pki).await;
    let ca = pki.ca.to_str().unwrap();
    let config = agent_config(&format!("https://127.0.0.1:{port}"), &["--ca-cert", ca]);
    assert_eq!(
        config.ws_url.as_str(),
        format!("wss://127.0.0.1:{port}/api/agent/ws")
    );
    assert!(registers(&state, config).await, "not registered over wss");
}

#[tokio::test]
async fn agent_registers_over_wss_with_the_pinned_fingerprint() {
    let pki = pki("fp");
    let (state, port, _stop) = controller(&pki).await;
    // A name the certificate does not carry: a pinned fingerprint does not care.
    let config = agent_config(
        &format!("wss://localhost:{port}"),
        &["--cert-sha256", &pki.leaf_sha256],
    );
    assert!(registers(&state, config).await, "not registered over wss");
}

#[tokio::test]
async fn agent_refuses_a_wrong_fingerprint_or_another_ca_with_a_clear_error() {
    let pki = pki("wrong");
    let other = pki_other();
    let (state, port, _stop) = controller(&pki).await;
    let url = format!("https://127.0.0.1:{port}");

    let wrong = "00:".repeat(31) + "00";
    let config = agent_config(&url, &["--cert-sha256", &wrong]);
    let e = vdesk_agent::tls::connect(&config.ws_url, config.tls.as_ref())
        .await
        .err()
        .expect("a wrong fingerprint must be refused");
    let actual = pki.leaf_sha256.replace(':', "").to_lowercase();
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(e.contains("--cert-sha256"), "{e}");
    assert!(e.contains(&actual), "names the fingerprint it got: {e}");

    let config = agent_config(&url, &["--ca-cert", other.ca.to_str().unwrap()]);
    let e = vdesk_agent::tls::connect(&config.ws_url, config.tls.as_ref())
        .await
        .err()
        .expect("a certificate of another CA must be refused");
    assert!(
        e.contains("TLS handshake") && e.contains("invalid peer certificate"),
        "{e}"
    );

    // A plain ws:// agent cannot speak to a TLS listener either.
    let config = agent_config(&format!("http://127.0.0.1:{port}"), &[]);
    assert!(vdesk_agent::tls::connect(&config.ws_url, None)
        .await
        .is_err());
    assert!(!online(&state), "no agent may have registered");
}

fn pki_other() -> Pki {
    pki("other")
}
