//! `vdesk-agent doctor`: checks what a VM's deployment gets wrong and says how to fix each: the
//! X display and its extensions, the GStreamer elements and which encoders work, PulseAudio,
//! the controller (reachable, its TLS certificate, the agent secret: a `check` message, proven
//! like a `hello` but registering nothing), the clocks, and the STUN/TURN servers the
//! controller hands this agent. It reads the same flags, environment and config file as the
//! daemon. Never prints a secret.

pub mod stun;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use vdesk_protocol::doctor::{ice_host_port, Check, Report};
use vdesk_protocol::{
    hello_proof, AgentToController, ControllerToAgent, ErrorCode, IceServer, PROTOCOL_VERSION,
};

use crate::config::{Args, Config};
use crate::encoder::{self, Kind, ProbeError};
use crate::tls::Trust;

/// `vdesk-agent doctor [--json]`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check this VM's set-up (the same flags, environment and config file as the agent): the
    /// X display and its extensions, GStreamer and the encoders, PulseAudio, the controller
    /// (reachable, TLS, the agent secret, without registering), the clocks, STUN and TURN. One
    /// line per check (ok, warn, FAIL and how to fix it); exit status 0 when nothing failed.
    Doctor {
        /// Print the report as JSON (docs/operations.md, "Diagnose").
        #[arg(long)]
        json: bool,
    },
}

/// Runs `doctor` and prints its report; the exit status.
pub async fn main(args: &Args, json: bool) -> u8 {
    let report = run(args, std::env::var("DISPLAY").ok()).await;
    print_report(&report, json);
    report.exit_code()
}

/// Prints `report` as text or JSON.
pub fn print_report(report: &Report, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
}

/// Clocks further apart than this fail: the agent ends a session when its link expires by its
/// own clock, the controller by its own, so they disagree by as much (and TURN servers check
/// the credentials' expiry by theirs).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5);
/// How long connecting to the controller and each step of the check may take.
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check. `env_display` is `$DISPLAY`.
pub async fn run(args: &Args, env_display: Option<String>) -> Report {
    let mut checks = Vec::new();
    // The configuration; a bad display is reported by the display check, the rest still runs.
    let (config, display_problem) = match Config::from_args(args, env_display.clone()) {
        Ok(c) => {
            checks.push(Check::ok(
                "config",
                format!("valid: VM {}, controller {}", c.vm_id, c.ws_url),
            ));
            (Some(c), None)
        }
        Err(e) if e.flag == "--display" => {
            let mut a = args.clone();
            a.display = Some(":0".into());
            match Config::from_args(&a, None) {
                Ok(c) => {
                    checks.push(Check::ok(
                        "config",
                        format!(
                            "valid but for the display: VM {}, controller {}",
                            c.vm_id, c.ws_url
                        ),
                    ));
                    (Some(c), Some(e.to_string()))
                }
                Err(e2) => {
                    checks.push(config_fail(&e2));
                    (None, Some(e.to_string()))
                }
            }
        }
        Err(e) => {
            checks.push(config_fail(&e));
            (None, None)
        }
    };
    match (&display_problem, &config) {
        (Some(p), _) => checks.push(Check::fail(
            "display",
            p.clone(),
            "set --display (VDESK_DISPLAY, or display = \":0\" in /etc/vdesk/agent.toml) to the \
             desktop's X display, e.g. :0",
        )),
        (None, Some(c)) => checks.extend(display(c).await),
        (None, None) => {}
    }
    let codecs = config
        .as_ref()
        .map(|c| c.codecs.clone())
        .unwrap_or_else(|| args.codecs.clone());
    checks.extend(gstreamer(codecs, args.encoder.clone()).await);
    // `--audio on`: a missing sound server fails; `auto`: a warning (the agent starts without
    // sound); `off`: not checked.
    let audio = match config.as_ref().map_or(args.audio, |c| c.audio) {
        crate::media::audio::AudioMode::Auto => None,
        crate::media::audio::AudioMode::On => Some(true),
        crate::media::audio::AudioMode::Off => Some(false),
    };
    checks.push(pulseaudio(audio).await);
    match &config {
        Some(c) => checks.extend(controller(c).await),
        None => checks.push(Check::warn(
            "controller",
            "not checked: the configuration is not valid",
            "fix the config line above first",
        )),
    }
    Report::new("vdesk-agent", env!("CARGO_PKG_VERSION"), checks)
}

fn config_fail(e: &crate::config::ConfigError) -> Check {
    Check::fail(
        "config",
        e.to_string(),
        format!(
            "set {} to a valid value (flag, VDESK_* variable, or key in /etc/vdesk/agent.toml; \
             see `vdesk-agent --help`)",
            e.flag
        ),
    )
}

/// The report for a config file that could not be read at all.
pub fn unreadable_config(problem: &str) -> Report {
    Report::new(
        "vdesk-agent",
        env!("CARGO_PKG_VERSION"),
        vec![Check::fail(
            "config",
            problem,
            "fix the file it names (keys are the long flags without `--`; see `vdesk-agent \
             --help`), or point --config / VDESK_CONFIG at the right one",
        )],
    )
}

// ---------------------------------------------------------------------------------------------
// X display
// ---------------------------------------------------------------------------------------------

async fn display(config: &Config) -> Vec<Check> {
    let display = config.media.display.clone();
    let damage_capture = config.media.capture == crate::pipeline::CaptureMode::Damage;
    let resize = config.input.allow_resize;
    tokio::task::spawn_blocking(move || display_blocking(&display, damage_capture, resize))
        .await
        .unwrap_or_else(|e| {
            vec![Check::fail(
                "display",
                format!("check panicked: {e}"),
                "report a bug",
            )]
        })
}

fn display_blocking(display: &str, damage_capture: bool, resize: bool) -> Vec<Check> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::ConnectionExt;
    let (conn, screen) = match x11rb::connect(Some(display)) {
        Ok(c) => c,
        Err(e) => {
            let auth = e.to_string().to_lowercase().contains("auth");
            return vec![Check::fail(
                "display",
                format!("cannot open X display {display}: {e}"),
                if auth {
                    "set XAUTHORITY to the session's cookie file (e.g. /run/user/UID/gdm/Xauthority or ~/.Xauthority), or run as the desktop's user".to_owned()
                } else {
                    format!("start the X server for {display}, or set --display (VDESK_DISPLAY) to the desktop's display (`echo $DISPLAY` in a terminal on the desktop)")
                },
            )];
        }
    };
    let mut out = Vec::new();
    let (w, h) = conn
        .setup()
        .roots
        .get(screen)
        .map(|s| (s.width_in_pixels, s.height_in_pixels))
        .unwrap_or((0, 0));
    out.push(Check::ok(
        "display",
        format!(
            "{display} is reachable, screen {w}x{h}, vendor {}",
            String::from_utf8_lossy(&conn.setup().vendor)
        ),
    ));
    // (name, what needs it, required?)
    let wanted = [
        ("XTEST", "input from viewers (mouse, keyboard)", true),
        ("DAMAGE", "--capture damage (the default)", damage_capture),
        ("XFIXES", "the cursor image and --capture damage", true),
        ("RANDR", "--allow-resize", resize),
    ];
    let mut missing_required = Vec::new();
    let mut missing_optional = Vec::new();
    let mut present = Vec::new();
    for (name, why, required) in wanted {
        let found = conn
            .query_extension(name.as_bytes())
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|r| r.present);
        match (found, required) {
            (true, _) => present.push(name),
            (false, true) => missing_required.push(format!("{name} ({why})")),
            (false, false) => missing_optional.push(format!("{name} ({why})")),
        }
    }
    let fix = "the X server lacks it: Xorg loads these by default (check Section \"Extensions\" in /etc/X11/xorg.conf.d); with Xvfb or Xvnc, remove any -extension NAME option";
    if !missing_required.is_empty() {
        out.push(Check::fail(
            "x-extensions",
            format!(
                "missing: {}; present: {}",
                missing_required.join(", "),
                present.join(", ")
            ),
            fix,
        ));
    } else if !missing_optional.is_empty() {
        out.push(Check::warn(
            "x-extensions",
            format!(
                "missing: {} (not needed with these settings); present: {}",
                missing_optional.join(", "),
                present.join(", ")
            ),
            fix,
        ));
    } else {
        out.push(Check::ok(
            "x-extensions",
            format!("present: {}", present.join(", ")),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GStreamer and encoders
// ---------------------------------------------------------------------------------------------

async fn gstreamer(codecs: Vec<crate::codec::Codec>, pref: encoder::EncoderPref) -> Vec<Check> {
    tokio::task::spawn_blocking(move || gstreamer_blocking(&codecs, &pref))
        .await
        .unwrap_or_else(|e| {
            vec![Check::fail(
                "gstreamer",
                format!("check panicked: {e}"),
                "report a bug",
            )]
        })
}

fn gstreamer_blocking(codecs: &[crate::codec::Codec], pref: &encoder::EncoderPref) -> Vec<Check> {
    let mut out = Vec::new();
    match crate::pipeline::check_plugins(codecs) {
        Ok(()) => out.push(Check::ok(
            "gstreamer",
            format!(
                "every element a session needs is installed ({})",
                gstreamer::version_string()
            ),
        )),
        Err(e) => {
            let packages: Vec<&str> = e
                .split("apt-get install ")
                .skip(1)
                .filter_map(|s| s.split(')').next())
                .collect();
            let mut packages = packages;
            packages.sort_unstable();
            packages.dedup();
            out.push(Check::fail(
                "gstreamer",
                e.clone(),
                if packages.is_empty() {
                    "install GStreamer 1.22 or later (libgstreamer1.0-0)".to_owned()
                } else {
                    format!("apt-get install {}", packages.join(" "))
                },
            ));
            if gstreamer::init().is_err() {
                return out;
            }
        }
    }
    // Every encoder the agent knows, run as the start-up probe runs it.
    let mut results: Vec<(Kind, Result<(), ProbeError>)> = Vec::new();
    for kind in Kind::ALL {
        results.push((kind, encoder::probe(kind)));
    }
    let list = |hw: bool, f: &dyn Fn(&Result<(), ProbeError>) -> bool| -> Vec<String> {
        results
            .iter()
            .filter(|(k, r)| k.is_hardware() == hw && f(r))
            .map(|(k, r)| match r {
                Err(ProbeError::Failed(why)) => format!("{k} ({why})"),
                _ => k.to_string(),
            })
            .collect()
    };
    let works = |r: &Result<(), ProbeError>| r.is_ok();
    let failed = |r: &Result<(), ProbeError>| matches!(r, Err(ProbeError::Failed(_)));
    let soft_ok = list(false, &works);
    let soft_bad = list(false, &|r| !works(r));
    if soft_bad.is_empty() {
        out.push(Check::ok(
            "encoders.software",
            format!("work: {}", soft_ok.join(", ")),
        ));
    } else {
        out.push(Check::warn(
            "encoders.software",
            format!("work: {}; do not: {}", none_if_empty(&soft_ok), soft_bad.join(", ")),
            "apt-get install gstreamer1.0-plugins-ugly (x264enc) gstreamer1.0-plugins-good (vp8enc, vp9enc)",
        ));
    }
    let hw_ok = list(true, &works);
    let hw_failed = list(true, &failed);
    let hw_missing: Vec<String> = results
        .iter()
        .filter(|(k, r)| k.is_hardware() && matches!(r, Err(ProbeError::NotInstalled)))
        .map(|(k, _)| k.to_string())
        .collect();
    let detail = format!(
        "work: {}; fail: {}; not installed: {}",
        none_if_empty(&hw_ok),
        none_if_empty(&hw_failed),
        none_if_empty(&hw_missing)
    );
    if hw_ok.is_empty() {
        out.push(Check::warn(
            "encoders.hardware",
            detail,
            "none works: H.264 is encoded in software (fine for a few viewers). For VA-API: apt-get install gstreamer1.0-plugins-bad and the GPU's VA driver (intel-media-va-driver, mesa-va-drivers), and pass the GPU (/dev/dri) into the VM",
        ));
    } else {
        out.push(Check::ok("encoders.hardware", detail));
    }
    // What the agent would choose, from the probes above.
    let mut probe = |kind: Kind| {
        results
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .unwrap_or(Err(ProbeError::NotInstalled))
    };
    match encoder::select(pref, codecs, &encoder::HARDWARE_H264, &mut probe) {
        Ok(choices) => {
            for c in choices {
                let usable = probe(c.kind).is_ok();
                let line = c.to_string();
                if usable {
                    out.push(Check::ok("encoders.chosen", line));
                } else {
                    out.push(Check::fail(
                        "encoders.chosen",
                        format!("{line}, which does not work here"),
                        format!("install {} (see encoders.software above) or drop its codec from --codecs", c.kind),
                    ));
                }
            }
        }
        Err(e) => out.push(Check::fail(
            "encoders.chosen",
            e.to_string(),
            "set --encoder auto (hardware if one works, else software) or --encoder software",
        )),
    }
    out
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// PulseAudio
// ---------------------------------------------------------------------------------------------

/// Whether a PulseAudio (or PipeWire-Pulse) server answers, via `pactl info`. `audio` is the
/// agent's `--audio`: `None` for `auto` (a missing server is a warning: the agent starts without
/// sound), `Some(true)` for `on` (then it fails), `Some(false)` for `off` (not checked).
pub async fn pulseaudio(audio: Option<bool>) -> Check {
    if audio == Some(false) {
        return Check::ok("pulseaudio", "audio is off: not checked");
    }
    let problem = |detail: String, fix: &str| {
        if audio == Some(true) {
            Check::fail("pulseaudio", detail, fix)
        } else {
            Check::warn(
                "pulseaudio",
                format!("{detail} (only needed for audio)"),
                fix,
            )
        }
    };
    let run = tokio::process::Command::new("pactl")
        .arg("info")
        .env("LC_ALL", "C")
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(3), run).await {
        Err(_) => problem("`pactl info` did not answer in 3 s".into(), "restart the session's sound server (`systemctl --user restart pulseaudio`)"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            problem("pactl is not installed, so the sound server cannot be checked".into(), "apt-get install pulseaudio-utils")
        }
        Ok(Err(e)) => problem(format!("cannot run pactl: {e}"), "apt-get install pulseaudio-utils"),
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            Check::ok(
                "pulseaudio",
                format!("server reachable: {} {}", field("Server Name:"), field("Server Version:")),
            )
        }
        Ok(Ok(out)) => problem(
            format!("no PulseAudio server reachable: {}", String::from_utf8_lossy(&out.stderr).trim()),
            "start it in the desktop session (`systemctl --user start pulseaudio`, or apt-get install pulseaudio), or set PULSE_SERVER",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The controller, the clocks, STUN and TURN
// ---------------------------------------------------------------------------------------------

async fn controller(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let url = &config.ws_url;
    let connected =
        tokio::time::timeout(NET_TIMEOUT, crate::tls::connect(url, config.tls.as_ref())).await;
    let mut ws = match connected {
        Err(_) => {
            out.push(Check::fail(
                "controller",
                format!("{url}: no answer in {} s", NET_TIMEOUT.as_secs()),
                "check --controller, that vdesk-controller runs there, and the firewall between this VM and it",
            ));
            return out;
        }
        Ok(Err(e)) if e.contains("TLS handshake") => {
            out.push(Check::ok(
                "controller",
                format!("{url}: TCP connection accepted"),
            ));
            out.push(Check::fail("tls", e, tls_fix(config.trust.as_ref())));
            return out;
        }
        Ok(Err(e)) if e.contains("WebSocket handshake") => {
            out.push(Check::fail(
                "controller",
                format!("{url}: {e}"),
                "--controller must be the vdesk controller's base URL (the one browsers open, without /vm/...); a proxy in front must forward /api/agent/ws as a WebSocket",
            ));
            return out;
        }
        Ok(Err(e)) => {
            out.push(Check::fail(
                "controller",
                format!("{url}: {e}"),
                "check --controller (host and port), that vdesk-controller runs there (`systemctl status vdesk-controller`), and the firewall",
            ));
            return out;
        }
        Ok(Ok(ws)) => ws,
    };
    out.push(Check::ok(
        "controller",
        format!("{url}: WebSocket connected"),
    ));
    out.push(match &config.trust {
        None => Check::warn(
            "tls",
            "plain ws://: the link is not encrypted",
            "serve the controller over TLS (--tls-cert or a proxy) and use an https:// --controller with --cert-sha256 or --ca-cert",
        ),
        Some(t) => Check::ok("tls", format!("the controller's certificate is valid for {}", trust_name(t))),
    });

    // The challenge, then `check` (a hello that registers nothing).
    let nonce = match next_message(&mut ws).await {
        Ok(ControllerToAgent::Challenge { nonce }) => nonce,
        Ok(other) => {
            out.push(Check::fail(
                "secret",
                format!("expected a challenge, got {}", kind_of(&other)),
                "is --controller a vdesk controller of this version?",
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                "secret",
                e,
                "upgrade vdesk-controller (it must send a challenge: protocol 2)",
            ));
            return out;
        }
    };
    let check = AgentToController::Check {
        vm_id: config.vm_id.clone(),
        proof: hello_proof(&config.token, &nonce, &config.vm_id),
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let sent_at_ms = crate::expiry::now_ms();
    let started = Instant::now();
    let Ok(text) = serde_json::to_string(&check) else {
        return out;
    };
    if let Err(e) = ws.send(Message::Text(text.into())).await {
        out.push(Check::fail(
            "secret",
            format!("sending the check: {e}"),
            "retry; check the network",
        ));
        return out;
    }
    let answer = next_message(&mut ws).await;
    let rtt = started.elapsed();
    // Close cleanly whatever the answer (the controller closes too).
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    let vm = &config.vm_id;
    let (ice_servers, controller_ms) = match answer {
        Ok(ControllerToAgent::Checked {
            ice_servers,
            now_ms,
            controller_version,
        }) => {
            out.push(Check::ok(
                "secret",
                format!("accepted for VM {vm} by vdesk-controller {controller_version} (checked without registering)"),
            ));
            (ice_servers, now_ms)
        }
        Ok(ControllerToAgent::Error {
            code: ErrorCode::Unauthorized,
            message,
        }) => {
            out.push(Check::fail(
                "secret",
                format!("refused for VM {vm}: {message}"),
                format!("the agent secret (VDESK_AGENT_TOKEN in ~/.config/vdesk/agent.env, or /etc/vdesk/agent.env for a kiosk) must be VM {vm}'s: print it on the controller host with `vdesk-controller agent-secret --vm {vm}`"),
            ));
            return out;
        }
        Ok(ControllerToAgent::Error { message, .. }) if message.contains("hello") => {
            out.push(Check::warn(
                "secret",
                format!("not checked: this controller predates `vdesk-agent doctor` ({message})"),
                "upgrade vdesk-controller to check the secret without registering",
            ));
            return out;
        }
        Ok(ControllerToAgent::Error { message, .. }) => {
            out.push(Check::fail(
                "secret",
                format!("refused: {message}"),
                "upgrade vdesk-agent or vdesk-controller so that both speak the same protocol",
            ));
            return out;
        }
        Ok(other) => {
            out.push(Check::fail(
                "secret",
                format!("unexpected answer {}", kind_of(&other)),
                "upgrade vdesk-controller",
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                "secret",
                e,
                "check the controller's log (journalctl -u vdesk-controller)",
            ));
            return out;
        }
    };
    out.push(clock(sent_at_ms, rtt, controller_ms));
    out.extend(ice(&ice_servers).await);
    out
}

fn trust_name(t: &Trust) -> String {
    match t {
        Trust::SystemRoots => "the system's CAs".into(),
        Trust::CaFile(p) => format!("--ca-cert {}", p.display()),
        Trust::Fingerprint(_) => "the pinned --cert-sha256".into(),
    }
}

fn tls_fix(trust: Option<&Trust>) -> String {
    match trust {
        Some(Trust::Fingerprint(_)) => "set --cert-sha256 (VDESK_CERT_SHA256) to the controller's certificate fingerprint: `openssl x509 -noout -fingerprint -sha256 -in CERT` on the controller host".into(),
        Some(Trust::CaFile(p)) => format!("{} must hold the CA that signed the controller's certificate, and the certificate must name the host in --controller; or pin it with --cert-sha256", p.display()),
        _ => "a self-signed or private-CA certificate: pin it with --cert-sha256 (openssl x509 -noout -fingerprint -sha256 -in CERT) or give its CA with --ca-cert; also check the controller's certificate has not expired (`vdesk-controller doctor`)".into(),
    }
}

async fn next_message(ws: &mut crate::tls::LinkStream) -> Result<ControllerToAgent, String> {
    let deadline = tokio::time::Instant::now() + NET_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("the controller said nothing in {} s", NET_TIMEOUT.as_secs()))?;
        match frame {
            None => return Err("the controller closed the connection".into()),
            Some(Err(e)) => return Err(format!("the connection failed: {e}")),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| format!("not a message of this protocol: {e}"))
            }
            Some(Ok(Message::Close(c))) => {
                return Err(format!(
                    "the controller closed the connection{}",
                    c.map(|c| format!(": {}", c.reason)).unwrap_or_default()
                ))
            }
            Some(Ok(_)) => {}
        }
    }
}

fn kind_of(m: &ControllerToAgent) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The controller's clock against ours: it read `controller_ms` between our send at
/// `sent_at_ms` and the answer `rtt` later.
pub fn clock(sent_at_ms: u64, rtt: Duration, controller_ms: u64) -> Check {
    let half = u64::try_from(rtt.as_millis() / 2).unwrap_or(u64::MAX);
    let ours = sent_at_ms.saturating_add(half);
    let skew_ms = i128::from(ours) - i128::from(controller_ms);
    let off = skew_ms.unsigned_abs();
    let tolerance = CLOCK_TOLERANCE.as_millis();
    let detail = format!(
        "this VM's clock is {:.1} s {} the controller's (±{:.1} s; tolerance {} s)",
        off as f64 / 1000.0,
        if skew_ms >= 0 { "ahead of" } else { "behind" },
        half as f64 / 1000.0,
        CLOCK_TOLERANCE.as_secs()
    );
    if off.saturating_sub(u128::from(half)) > tolerance {
        Check::fail(
            "clock",
            detail,
            "synchronise both clocks with NTP: `timedatectl set-ntp true` (systemd-timesyncd) or apt-get install chrony, on this VM and on the controller host; links would end early or late by the difference",
        )
    } else {
        Check::ok("clock", detail)
    }
}

/// Each STUN and TURN URL the controller hands this agent, asked from here.
async fn ice(servers: &[IceServer]) -> Vec<Check> {
    let mut out = Vec::new();
    if servers.is_empty() {
        out.push(Check::ok(
            "stun-turn",
            "the controller configures no STUN or TURN server: host candidates only (enough on a LAN)",
        ));
        return out;
    }
    for server in servers {
        for url in &server.urls {
            out.push(
                ice_url(
                    url,
                    server.username.as_deref(),
                    server.credential.as_deref(),
                )
                .await,
            );
        }
    }
    out
}

async fn ice_url(url: &str, username: Option<&str>, credential: Option<&str>) -> Check {
    let name = if url.starts_with("turn") {
        "turn"
    } else {
        "stun"
    };
    let tcp_or_tls =
        url.starts_with("turns:") || url.starts_with("stuns:") || url.contains("transport=tcp");
    if tcp_or_tls {
        return Check::warn(
            name,
            format!("{url}: not checked (the doctor asks over UDP only)"),
            "list a UDP URL of the same server too, to have it checked",
        );
    }
    let Some(hp) = ice_host_port(url) else {
        return Check::fail(
            name,
            format!("{url}: not a stun:/turn: URL with a host"),
            "fix --stun-server / --turn-server on the controller",
        );
    };
    let addr = match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host(hp.clone())).await {
        Ok(Ok(mut a)) => match a.next() {
            Some(a) => a,
            None => return unresolved(name, url, &hp),
        },
        _ => return unresolved(name, url, &hp),
    };
    if name == "stun" {
        return match stun::binding(addr).await {
            Ok(mapped) => Check::ok("stun", format!("{url} answers: this VM is seen as {mapped}")),
            Err(e) => Check::fail("stun", format!("{url}: {e}"), "is the STUN server running, and UDP to it allowed from this VM (firewall, security group)?"),
        };
    }
    let (Some(user), Some(pass)) = (username, credential) else {
        return Check::fail(
            "turn",
            format!("{url}: the controller gave no credentials"),
            "set --turn-secret (or --turn-username/--turn-password) on the controller",
        );
    };
    match stun::allocate(addr, user, pass).await {
        Ok(relayed) => Check::ok("turn", format!("{url} allocated a relay ({relayed}) with this VM's credentials, then released it")),
        Err(stun::TurnError::Credentials(e)) => Check::fail(
            "turn",
            format!("{url}: {e}"),
            "the controller's --turn-secret (VDESK_TURN_SECRET) must equal coturn's static-auth-secret (with use-auth-secret in turnserver.conf), and both clocks must be right",
        ),
        Err(e) => Check::fail("turn", format!("{url}: {e}"), "is the TURN server running, and UDP to it allowed from this VM (firewall, security group)?"),
    }
}

fn unresolved(name: &str, url: &str, hp: &str) -> Check {
    Check::fail(name, format!("{url}: {hp} does not resolve from this VM"), "fix the DNS name (or /etc/hosts) in the VM, or use an address in the controller's --stun-server / --turn-server")
}
