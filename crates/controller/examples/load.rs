//! Signalling load test: one `vdesk-controller` process on loopback, fake agents over WebSocket
//! and fake viewers over HTTP + server-sent events, all in this process. Every session exchanges
//! an answer and `--candidates` candidates each way, each candidate naming its session, its
//! sequence number and when it was sent. Checks that no message is lost, duplicated, reordered
//! or delivered to the wrong session; reports the controller's RSS (before, with every session
//! open, after they closed) and the relay latency (send -> receipt) percentiles.
//!
//! ```sh
//! cargo build --release -p vdesk-controller --bins --examples
//! target/release/examples/load --sessions 1000 --vms 50 --candidates 10
//! ```
//! Exits non-zero if any check fails. Not a test of speed: it reports, it does not assert times.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use vdesk_controller::viewer_token::{mint, unix_now};
use vdesk_controller::ControllerSecret;
use vdesk_protocol::{Permission, VmId};

const OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
const ANSWER: &str =
    "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
const TIMEOUT: Duration = Duration::from_secs(120);

fn start() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn micros() -> u64 {
    start().elapsed().as_micros() as u64
}

/// A candidate line that names its session, sequence number and send time.
fn candidate(session: &str, seq: usize) -> String {
    format!(
        "candidate:{seq} 1 udp 2122252543 192.0.2.1 {} typ host sid {session} seq {seq} sent {}",
        10_000 + seq,
        micros()
    )
}

/// (session, seq, sent) of a candidate line made by [`candidate`].
fn parse_candidate(line: &str) -> Option<(String, usize, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let at = |name: &str| f.iter().position(|x| *x == name).and_then(|i| f.get(i + 1));
    Some((
        at("sid")?.to_string(),
        at("seq")?.parse().ok()?,
        at("sent")?.parse().ok()?,
    ))
}

#[derive(Default)]
struct Stats {
    /// Relay latencies in microseconds, viewer -> agent and agent -> viewer.
    to_agent: Vec<u64>,
    to_viewer: Vec<u64>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Stats>>;
/// Per session: the VM index of the agent that got its offer, and the browser candidates' seqs.
type Received = HashMap<String, (usize, Vec<usize>)>;

fn fail(stats: &Shared, e: String) {
    let mut s = stats.lock().unwrap();
    if s.errors.len() < 20 {
        eprintln!("load: {e}");
    }
    s.errors.push(e);
}

struct Args {
    sessions: usize,
    vms: usize,
    candidates: usize,
    /// Pause between a viewer's candidate posts (0 = all at once).
    pace: Duration,
    /// Wait after the sessions closed before the last RSS reading (tombstones last 60 s).
    linger: Duration,
    bin: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        sessions: 1000,
        vms: 50,
        candidates: 10,
        pace: Duration::ZERO,
        linger: Duration::from_millis(500),
        bin: std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .context("no parent directory")?
            .join("vdesk-controller"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sessions" => a.sessions = v.parse()?,
            "--vms" => a.vms = v.parse()?,
            "--candidates" => a.candidates = v.parse()?,
            "--pace-ms" => a.pace = Duration::from_millis(v.parse()?),
            "--linger-s" => a.linger = Duration::from_secs(v.parse()?),
            "--bin" => a.bin = v.into(),
            _ => bail!(
                "unknown flag {flag} (--sessions N --vms N --candidates N --pace-ms MS \
                 --linger-s S --bin PATH)"
            ),
        }
    }
    ensure!(
        a.vms > 0 && a.sessions > 0,
        "--sessions and --vms must be > 0"
    );
    Ok(a)
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let secret_text = format!("load-test-secret-{}", std::process::id());
    let secret = ControllerSecret::new(secret_text.clone());
    let controller = Controller(
        Command::new(&args.bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--max-sessions-per-vm",
                "0",
                "--max-sessions-per-token",
                "0",
                "--max-sessions",
                "1000000",
            ])
            .args(["--session-rate-limit", "0", "--candidate-rate-limit", "0"])
            .args(["--session-idle-timeout", "600"])
            .env("VDESK_SECRET", &secret_text)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} (--bin)", args.bin.display()))?,
    );
    let pid = controller.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()?;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (rss_idle, _) = rss(pid);
    let stats: Shared = Arc::default();
    let k = args.candidates;

    // Agents: answer each offer at once; answer each browser candidate with one of their own
    // (so that both directions flow at the viewers' pace, while every session is open); record
    // what arrives for each session.
    // received[session] = (vm of the agent that got it, browser candidate seqs in arrival order)
    let received: Arc<Mutex<Received>> = Arc::default();
    let mut agents = Vec::new();
    for vm_index in 0..args.vms {
        let vm = VmId::new(format!("vm-{vm_index}"))?;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/agent/ws")).await?;
        let hello = json!({"type": "hello", "vmId": vm, "token": secret.agent_secret(&vm),
                           "protocolVersion": 1, "agentVersion": "load"});
        ws.send(Message::Text(hello.to_string().into())).await?;
        let (stats, received) = (stats.clone(), received.clone());
        agents.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("offer") => {
                        let sid = v["sessionId"].as_str().unwrap_or("").to_owned();
                        received
                            .lock()
                            .unwrap()
                            .insert(sid.clone(), (vm_index, Vec::new()));
                        let m = json!({"type": "answer", "sessionId": sid, "sdp": ANSWER});
                        if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Some("candidate") => {
                        let sid = v["sessionId"].as_str().unwrap_or("");
                        let line = v["candidate"]["candidate"].as_str().unwrap_or("");
                        let Some((named, seq, sent)) = parse_candidate(line) else {
                            fail(&stats, format!("agent vm-{vm_index}: unreadable candidate {line:?}"));
                            continue;
                        };
                        if named != sid {
                            fail(&stats, format!("agent: candidate of {named} delivered as {sid}"));
                        }
                        stats.lock().unwrap().to_agent.push(micros().saturating_sub(sent));
                        let known = match received.lock().unwrap().get_mut(sid) {
                            Some((vm, seqs)) if *vm == vm_index => {
                                seqs.push(seq);
                                true
                            }
                            _ => false,
                        };
                        if !known {
                            fail(&stats, format!("agent vm-{vm_index}: candidate for a session it was not offered"));
                        }
                        let sid = sid.to_owned();
                        let m = json!({"type": "candidate", "sessionId": sid,
                            "candidate": {"candidate": candidate(&sid, seq), "sdpMLineIndex": 0}});
                        if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Some("welcome") | Some("endSession") => {}
                    other => fail(&stats, format!("agent vm-{vm_index}: unexpected {other:?}: {v}")),
                }
            }
        }));
    }

    // Viewers: create, open the event stream, wait until all are open, then trickle.
    let all_open = Arc::new(Barrier::new(args.sessions + 1));
    let all_done = Arc::new(Barrier::new(args.sessions + 1));
    let created = Arc::new(AtomicUsize::new(0));
    let mut viewers = Vec::new();
    let t_create = Instant::now();
    for i in 0..args.sessions {
        let vm = VmId::new(format!("vm-{}", i % args.vms))?;
        let token = mint(&secret, &vm, Permission::View, unix_now() + 3600);
        let (http, base, stats) = (http.clone(), base.clone(), stats.clone());
        let (all_open, all_done, created) = (all_open.clone(), all_done.clone(), created.clone());
        let pace = args.pace;
        viewers.push(tokio::spawn(async move {
            let r = viewer(
                &http, &base, &vm, &token, k, pace, &stats, &all_open, &all_done, &created,
            )
            .await;
            if let Err(e) = r {
                fail(&stats, format!("viewer {i}: {e:#}"));
            }
        }));
    }
    tokio::time::timeout(TIMEOUT, all_open.wait())
        .await
        .context("not every session opened in time")?;
    let open_s = t_create.elapsed().as_secs_f64();
    tokio::time::timeout(TIMEOUT, all_done.wait())
        .await
        .context("not every session finished its exchange in time")?;
    let exchange_s = t_create.elapsed().as_secs_f64() - open_s;
    let (rss_peak, hwm) = rss(pid);
    for v in viewers {
        v.await?;
    }
    tokio::time::sleep(args.linger).await;
    let (rss_after, _) = rss(pid);

    // Every session: exactly k browser candidates, in order, at the agent of its VM.
    let received = received.lock().unwrap();
    let mut stats = stats.lock().unwrap();
    if received.len() != args.sessions {
        stats.errors.push(format!(
            "{} offers reached agents, expected {}",
            received.len(),
            args.sessions
        ));
    }
    for (sid, (_, seqs)) in received.iter() {
        if *seqs != (0..k).collect::<Vec<_>>() {
            stats.errors.push(format!(
                "session {sid}: agent got browser candidates {seqs:?}"
            ));
        }
    }
    for a in agents {
        a.abort();
    }
    stats.to_agent.sort_unstable();
    stats.to_viewer.sort_unstable();
    println!("## Signalling load: result");
    println!();
    println!(
        "- sessions: {} over {} VMs; per session an offer, an answer and {} candidates each way, \
         one every {} ms per session",
        args.sessions,
        args.vms,
        k,
        args.pace.as_millis()
    );
    println!(
        "- messages relayed: {} to agents, {} to viewers; errors (lost, duplicated, reordered, misdelivered): {}",
        stats.to_agent.len(),
        stats.to_viewer.len(),
        stats.errors.len()
    );
    println!("- all {} sessions open (created + event stream) after {open_s:.2} s; exchange {exchange_s:.2} s", args.sessions);
    for (name, v) in [
        ("viewer -> agent", &stats.to_agent),
        ("agent -> viewer", &stats.to_viewer),
    ] {
        println!(
            "- relay latency {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0),
            v.len()
        );
    }
    println!(
        "- controller RSS: {} KiB idle, {} KiB with all sessions open (peak {} KiB), {} KiB {:.1} s after they closed",
        rss_idle,
        rss_peak,
        hwm,
        rss_after,
        args.linger.as_secs_f64()
    );
    drop(controller);
    if !stats.errors.is_empty() {
        bail!("{} errors, first: {}", stats.errors.len(), stats.errors[0]);
    }
    Ok(())
}

/// A number in [0, 1) from the session id (random already).
fn rand_fraction(sid: &str) -> f64 {
    let v = u32::from_str_radix(sid.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    f64::from(v) / (f64::from(u32::MAX) + 1.0)
}

#[allow(clippy::too_many_arguments)]
async fn viewer(
    http: &reqwest::Client,
    base: &str,
    vm: &VmId,
    token: &str,
    k: usize,
    pace: Duration,
    stats: &Shared,
    all_open: &Barrier,
    all_done: &Barrier,
    created: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut opened = false;
    let mut done = false;
    let result = async {
        let resp = http
            .post(format!("{base}/api/webrtc/session"))
            .bearer_auth(token)
            .json(&json!({"vmId": vm, "offer": {"type": "offer", "sdp": OFFER}}))
            .send()
            .await?;
        ensure!(resp.status() == 201, "create: {}", resp.status());
        let v: Value = resp.json().await?;
        let sid = v["sessionId"].as_str().context("no sessionId")?.to_owned();
        let events = http
            .get(format!("{base}{}?token={token}", v["eventsUrl"].as_str().unwrap_or("")))
            .send()
            .await?;
        ensure!(events.status() == 200, "events: {}", events.status());
        created.fetch_add(1, Ordering::Relaxed);
        opened = true;
        all_open.wait().await;

        let session = format!("{base}/api/webrtc/session/{sid}");
        let post = async {
            // Start at a random point of the first interval, as real viewers would.
            tokio::time::sleep(pace.mul_f64(rand_fraction(&sid))).await;
            for seq in 0..k {
                if seq > 0 {
                    tokio::time::sleep(pace).await;
                }
                let body = json!({"candidate": {"candidate": candidate(&sid, seq), "sdpMLineIndex": 0},
                                  "from": "browser"});
                let r = http
                    .post(format!("{session}/candidate"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await?;
                ensure!(r.status() == 204, "candidate: {}", r.status());
            }
            anyhow::Ok(())
        };
        let read = async {
            let mut stream = events.bytes_stream();
            let mut buf = String::new();
            let (mut answer, mut seqs) = (0, Vec::new());
            while answer == 0 || seqs.len() < k {
                let chunk = stream.next().await.context("event stream ended early")??;
                buf.push_str(std::str::from_utf8(&chunk)?);
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let ev: Value = serde_json::from_str(data)?;
                    match ev["type"].as_str() {
                        Some("answer") => answer += 1,
                        Some("candidate") => {
                            let line = ev["candidate"]["candidate"].as_str().unwrap_or("");
                            let (named, seq, sent) =
                                parse_candidate(line).context("unreadable candidate")?;
                            ensure!(named == sid, "got a candidate of session {named}");
                            stats.lock().unwrap().to_viewer.push(micros().saturating_sub(sent));
                            seqs.push(seq);
                        }
                        other => bail!("unexpected event {other:?}"),
                    }
                }
            }
            ensure!(answer == 1, "{answer} answers");
            ensure!(seqs == (0..k).collect::<Vec<_>>(), "VM candidates {seqs:?}");
            anyhow::Ok(())
        };
        let (p, r) = tokio::time::timeout(TIMEOUT, async { tokio::join!(post, read) })
            .await
            .context("exchange timed out")?;
        p?;
        r?;
        done = true;
        all_done.wait().await;
        let r = http.delete(&session).bearer_auth(token).send().await?;
        ensure!(r.status() == 204, "delete: {}", r.status());
        anyhow::Ok(())
    }
    .await;
    // A failed viewer still passes the barriers, so the others are not held forever.
    if !opened {
        all_open.wait().await;
    }
    if !done {
        all_done.wait().await;
    }
    result
}
