//! The agent's configuration in two steps: `Args` (flags and `VDESK_*` environment variables, as
//! clap reads them) become a validated `Config` before any socket or pipeline exists, so a bad
//! flag fails at start-up with a message that names it.

use clap::Parser;
use url::Url;
use vdesk_protocol::VmId;

use crate::codec::Codec;
use crate::encoder::EncoderPref;
use crate::input::InputSettings;
use crate::pipeline::{CaptureMode, MediaSettings};

/// vdesk agent: streams this VM's X display to browsers over WebRTC.
///
/// Connects out to the vdesk controller, registers the VM id, and answers every viewer's offer
/// with a real WebRTC peer (GStreamer webrtcbin) that captures the X display.
#[derive(Parser, Debug, Clone)]
#[command(name = "vdesk-agent", version, about, long_about)]
pub struct Args {
    /// `doctor`: check this VM's set-up instead of running (see `vdesk-agent help doctor`).
    #[command(subcommand)]
    pub command: Option<crate::doctor::Command>,

    /// Config file (TOML; keys are these long flags without `--`, e.g. `vm-id = "desk1"`).
    /// Flags and environment variables override it. Without this flag /etc/vdesk/agent.toml is
    /// read if it exists; a file named here must exist.
    #[arg(long, env = "VDESK_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    /// Print the effective settings (TOML, secrets as "***", each with where it came from) and
    /// exit.
    #[arg(long)]
    pub print_config: bool,

    /// Base URL of the controller, e.g. http://192.168.100.1:8080 or https://vdesk.example.org
    /// (the agent connects out to it; the VM needs no open port). https:// (or wss://) encrypts
    /// the link; without --ca-cert or --cert-sha256 the system's CA store decides whom to trust.
    /// Several controllers of a cluster: comma-separated URLs (all http(s) alike); the agent
    /// connects to the first that answers and moves to the next when its link drops, resuming
    /// its sessions there. A host name resolving to several addresses is tried address by
    /// address too.
    #[arg(long, env = "VDESK_CONTROLLER", value_name = "URL[,URL...]")]
    pub controller: String,

    /// With an https:// controller: trust only certificates issued by the CA(s) in this PEM
    /// file (e.g. the one that signed the controller's --tls-cert), not the system's CAs.
    #[arg(
        long,
        env = "VDESK_CA_CERT",
        value_name = "PATH",
        conflicts_with = "cert_sha256"
    )]
    pub ca_cert: Option<std::path::PathBuf>,

    /// With an https:// controller: trust only the certificate with this SHA-256 fingerprint
    /// (64 hex digits, colons allowed: `openssl x509 -noout -fingerprint -sha256 -in CERT`),
    /// whatever its issuer, name or dates. Suits a self-signed --tls-cert.
    #[arg(long, env = "VDESK_CERT_SHA256", value_name = "HEX")]
    pub cert_sha256: Option<String>,

    /// This VM's id, as it appears in viewer URLs (/vm/ID): 1-64 of A-Z a-z 0-9 . _ -
    #[arg(long, env = "VDESK_VM_ID", value_name = "ID")]
    pub vm_id: String,

    /// This VM's agent secret: print it on the controller host with `vdesk-controller
    /// agent-secret --vm ID` (or the controller's shared --agent-token). It never crosses the
    /// wire: the hello proves it with an HMAC over the controller's challenge. Prefer the
    /// environment variable: a flag is visible to every local user in `ps`.
    #[arg(
        long,
        env = "VDESK_AGENT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,

    /// X display to capture, e.g. :0 [default: $DISPLAY]
    #[arg(long, env = "VDESK_DISPLAY", value_name = "DISPLAY")]
    pub display: Option<String>,

    /// Most frames per second captured and sent (with --capture damage: while the screen
    /// changes). Above the usual 60 Hz on purpose: an application animating at 60 fps then
    /// leaves room for a change elsewhere (a key echoed) to be sent at once instead of waiting
    /// for the animation's next frame (busy-screen p50 23-26 ms at 60, 11-22 ms at 90, for the
    /// same CPU; docs/benchmarks.md).
    #[arg(
        long,
        env = "VDESK_FRAMERATE",
        default_value_t = 90,
        value_name = "FPS"
    )]
    pub framerate: u32,

    /// With --capture damage: frames per second sent while the screen does not change (the last
    /// frame again). Fewer saves CPU on a still desktop; 30 keeps Chromium's renderer from
    /// sleeping, which measured p95 48 ms instead of 120 ms at 10 (docs/benchmarks.md).
    #[arg(
        long,
        env = "VDESK_STILL_FPS",
        default_value_t = 30,
        value_name = "FPS"
    )]
    pub still_fps: u32,

    /// Target video bitrate.
    #[arg(
        long,
        env = "VDESK_BITRATE_KBPS",
        default_value_t = 4000,
        value_name = "KBPS"
    )]
    pub bitrate_kbps: u32,

    /// Lowest bitrate the agent drops to on a lossy or congested path (it starts at
    /// --bitrate-kbps and comes back to it when the path clears).
    #[arg(
        long,
        env = "VDESK_MIN_BITRATE_KBPS",
        default_value_t = 300,
        value_name = "KBPS"
    )]
    pub min_bitrate_kbps: u32,

    /// Serve this agent's per-session numbers at http://ADDR/metrics (Prometheus text), e.g.
    /// 127.0.0.1:9108. Off by default: the VM needs no open port, and the controller's /metrics
    /// shows the same numbers.
    #[arg(long, env = "VDESK_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Codecs in order of preference; the first one the browser's offer supports is used.
    /// H.264 first: less CPU (25% vs 40% of a core, busy 1280x720) and it kept the picture
    /// moving under a 1 Mbit/s cap where VP8 froze for 7 s. On a good network VP8 showed frames
    /// sooner in Chromium (busy p50 22 ms vs 25-39 ms): `--codecs vp8,h264` (docs/benchmarks.md).
    #[arg(
        long,
        env = "VDESK_CODECS",
        default_value = "h264,vp8",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    pub codecs: Vec<Codec>,

    /// Which encoder element to use. "auto": a hardware H.264 encoder (tried in order:
    /// vah264enc, vaapih264enc, nvh264enc, v4l2h264enc) if one encodes test frames at start-up,
    /// software otherwise; VP8 and VP9 always in software. "software": x264enc, vp8enc, vp9enc.
    /// Or one element name (e.g. nvh264enc) for its codec: the agent refuses to start if it does
    /// not work. A hardware encoder that fails in a session is replaced by software. The log
    /// says which encoder each codec uses and why.
    #[arg(
        long,
        env = "VDESK_ENCODER",
        default_value = "auto",
        value_name = "auto|software|ELEMENT"
    )]
    pub encoder: EncoderPref,

    /// How to capture the screen: "damage" sends a frame as soon as X reports a change (lowest
    /// latency, near-zero cost on a static screen; needs the DAMAGE and XFIXES extensions);
    /// "ximagesrc" captures at a fixed --framerate (every frame costs: 30 or 60 suit it better
    /// than the default 90) and draws the pointer into the picture.
    #[arg(
        long,
        env = "VDESK_CAPTURE",
        default_value = "damage",
        value_name = "MODE"
    )]
    pub capture: CaptureMode,

    /// Most viewers streamed at once; further offers are refused with a clear error.
    #[arg(
        long,
        env = "VDESK_MAX_SESSIONS",
        default_value_t = 8,
        value_name = "N"
    )]
    pub max_sessions: usize,

    /// Let viewers set the screen size to their window's (RandR). On Xvfb the screen can only
    /// shrink below the size Xvfb was started with.
    #[arg(long, env = "VDESK_ALLOW_RESIZE")]
    pub allow_resize: bool,

    /// Draw the X cursor into the video for every viewer. By default each viewer draws the
    /// cursor itself (sent as an image on change; to a view-only viewer also where it is), which
    /// keeps pointer motion local and lets every viewer share one encoder.
    #[arg(long, env = "VDESK_STREAM_CURSOR")]
    pub stream_cursor: bool,

    /// Send the VM's sound (the default sink's monitor, Opus) to viewers whose page asks for it.
    /// auto: on when a PulseAudio (or PipeWire-Pulse) server is reachable at start-up, else off
    /// with one log line; on: always (a viewer gets no sound while there is no server); off.
    #[arg(
        long,
        env = "VDESK_AUDIO",
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub audio: crate::media::audio::AudioMode,
    /// Seconds the running sessions are kept streaming when the link to the controller drops
    /// (e.g. while the controller restarts); on reconnecting they are resumed. 0 ends them at once.
    #[arg(
        long,
        env = "VDESK_RESUME_GRACE",
        default_value_t = 60,
        value_name = "SECS"
    )]
    pub resume_grace: u64,

    /// Log filter (tracing's EnvFilter syntax), e.g. info or vdesk_agent=debug.
    #[arg(long, env = "VDESK_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,
}

/// A checked configuration: everything the agent needs, in the types it needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ws://…/api/agent/ws` (or `wss://`).
    pub ws_url: Url,
    /// Every controller's WebSocket URL (`--controller a,b,c`), `ws_url` first.
    pub ws_urls: Vec<Url>,
    /// What a `wss://` link trusts (`None` for `ws://`).
    pub trust: Option<crate::tls::Trust>,
    /// The TLS configuration built from `trust`, once, at start-up.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub vm_id: VmId,
    pub token: String,
    pub media: MediaSettings,
    pub codecs: Vec<Codec>,
    pub encoder: EncoderPref,
    pub max_sessions: usize,
    pub input: InputSettings,
    /// How long sessions outlive a lost controller link (`--resume-grace`).
    pub resume_grace: std::time::Duration,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--audio`.
    pub audio: crate::media::audio::AudioMode,
}

/// A flag that is wrong, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn bad(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        problem: problem.into(),
    }
}

impl Config {
    /// Validates `args`; `env_display` is `$DISPLAY`, used when `--display` is not given.
    pub fn from_args(args: &Args, env_display: Option<String>) -> Result<Config, ConfigError> {
        let ws_urls = args
            .controller
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(agent_ws_url)
            .collect::<Result<Vec<_>, _>>()?;
        let ws_url = ws_urls
            .first()
            .cloned()
            .ok_or_else(|| bad("--controller", "give the controller's URL"))?;
        if ws_urls.iter().any(|u| u.scheme() != ws_url.scheme()) {
            return Err(bad(
                "--controller",
                "several controllers must all be http:// or all https://",
            ));
        }
        let pinned = match (&args.ca_cert, &args.cert_sha256) {
            (Some(path), _) => Some(crate::tls::Trust::CaFile(path.clone())),
            (None, Some(fp)) => Some(crate::tls::Trust::Fingerprint(
                crate::tls::parse_fingerprint(fp).map_err(|e| bad("--cert-sha256", e))?,
            )),
            (None, None) => None,
        };
        let trust = match (ws_url.scheme(), pinned) {
            ("wss", pinned) => Some(pinned.unwrap_or(crate::tls::Trust::SystemRoots)),
            (_, None) => None,
            (_, Some(crate::tls::Trust::CaFile(_))) => {
                return Err(bad("--ca-cert", "needs an https:// or wss:// --controller"))
            }
            (_, Some(_)) => {
                return Err(bad(
                    "--cert-sha256",
                    "needs an https:// or wss:// --controller",
                ))
            }
        };
        let tls = match &trust {
            Some(t) => Some(crate::tls::client_config(t).map_err(|e| {
                let flag = match t {
                    crate::tls::Trust::CaFile(_) => "--ca-cert",
                    crate::tls::Trust::Fingerprint(_) => "--cert-sha256",
                    crate::tls::Trust::SystemRoots => "--controller",
                };
                bad(flag, e)
            })?),
            None => None,
        };
        let vm_id = VmId::new(&args.vm_id).map_err(|e| bad("--vm-id", e.problem))?;
        if args.token.trim().is_empty() {
            return Err(bad("--token", "must not be empty"));
        }
        let display = args
            .display
            .clone()
            .or(env_display)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| bad("--display", "not given and $DISPLAY is not set"))?;
        if !display.contains(':') {
            return Err(bad(
                "--display",
                format!("{display:?} is not an X display like :0"),
            ));
        }
        if !(1..=120).contains(&args.framerate) {
            return Err(bad("--framerate", "must be 1 to 120"));
        }
        if !(1..=args.framerate).contains(&args.still_fps) {
            return Err(bad("--still-fps", "must be 1 to --framerate"));
        }
        if !(100..=100_000).contains(&args.bitrate_kbps) {
            return Err(bad("--bitrate-kbps", "must be 100 to 100000"));
        }
        if !(100..=args.bitrate_kbps).contains(&args.min_bitrate_kbps) {
            return Err(bad("--min-bitrate-kbps", "must be 100 to --bitrate-kbps"));
        }
        if args.codecs.is_empty() {
            return Err(bad("--codecs", "name at least one of h264, vp8, vp9"));
        }
        if let EncoderPref::Element(kind) = args.encoder {
            if !args.codecs.contains(&kind.codec()) {
                return Err(bad(
                    "--encoder",
                    format!(
                        "{kind} encodes {}, which --codecs does not list",
                        kind.codec()
                    ),
                ));
            }
        }
        if args.max_sessions == 0 {
            return Err(bad("--max-sessions", "must be at least 1"));
        }
        if args.resume_grace > 3600 {
            return Err(bad("--resume-grace", "must be 0 to 3600 seconds"));
        }
        Ok(Config {
            ws_url,
            ws_urls,
            trust,
            tls,
            vm_id,
            token: args.token.clone(),
            input: InputSettings {
                display: display.clone(),
                allow_resize: args.allow_resize,
            },
            media: MediaSettings {
                display,
                capture: args.capture,
                framerate: args.framerate,
                still_fps: args.still_fps,
                bitrate_kbps: args.bitrate_kbps,
                min_bitrate_kbps: args.min_bitrate_kbps,
                show_pointer: args.stream_cursor,
            },
            codecs: args.codecs.clone(),
            encoder: args.encoder.clone(),
            max_sessions: args.max_sessions,
            resume_grace: std::time::Duration::from_secs(args.resume_grace),
            metrics_listen: args.metrics_listen,
            audio: args.audio,
        })
    }
}

/// `http://host:port/prefix` -> `ws://host:port/prefix/api/agent/ws`; `https://` -> `wss://`.
fn agent_ws_url(controller: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(controller)
        .map_err(|e| bad("--controller", format!("{controller:?} is not a URL: {e}")))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(bad("--controller", format!("unsupported scheme {other:?}"))),
    };
    if url.host_str().is_none() {
        return Err(bad("--controller", "has no host"));
    }
    url.set_scheme(scheme)
        .map_err(|_| bad("--controller", "cannot use a ws:// scheme"))?;
    let path = format!("{}/api/agent/ws", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_help_says_where_the_secret_comes_from() {
        use clap::CommandFactory;
        let cmd = Args::command();
        let help = cmd
            .get_arguments()
            .find(|a| a.get_id() == "token")
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // The controller's subcommand that prints a VM's secret (issue 11, item 13: the help
        // used to point at a flag meant for something else).
        assert!(
            help.contains("vdesk-controller agent-secret --vm"),
            "{help}"
        );
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec![
            "vdesk-agent",
            "--controller",
            "http://127.0.0.1:8080",
            "--vm-id",
            "demo",
            "--token",
            "secret",
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn builds_the_ws_url_and_takes_display_from_env() {
        let c = Config::from_args(&args(&[]), Some(":7".into())).unwrap();
        assert_eq!(c.ws_url.as_str(), "ws://127.0.0.1:8080/api/agent/ws");
        assert_eq!(c.media.display, ":7");
        assert_eq!(c.codecs, vec![Codec::H264, Codec::Vp8]);
        let c = Config::from_args(&args(&["--display", ":3"]), Some(":7".into())).unwrap();
        assert_eq!(c.media.display, ":3");
    }

    #[test]
    fn several_controllers_are_comma_separated_and_alike() {
        let mut a = args(&[]);
        a.controller = "http://10.0.0.1:8080, http://10.0.0.2:8080".into();
        let c = Config::from_args(&a, Some(":0".into())).unwrap();
        let urls: Vec<&str> = c.ws_urls.iter().map(|u| u.as_str()).collect();
        assert_eq!(
            urls,
            [
                "ws://10.0.0.1:8080/api/agent/ws",
                "ws://10.0.0.2:8080/api/agent/ws"
            ]
        );
        assert_eq!(c.ws_url, c.ws_urls[0]);
        a.controller = "http://10.0.0.1:8080,https://10.0.0.2".into();
        assert_eq!(
            Config::from_args(&a, Some(":0".into())).unwrap_err().flag,
            "--controller"
        );
        a.controller = " , ".into();
        assert!(Config::from_args(&a, Some(":0".into())).is_err());
    }

    #[test]
    fn https_controllers_get_a_wss_link_and_a_trust() {
        let mut a = args(&["--cert-sha256", &("AB:".repeat(31) + "AB")]);
        a.controller = "https://vdesk.example.org/x".into();
        let c = Config::from_args(&a, Some(":0".into())).unwrap();
        assert_eq!(c.ws_url.as_str(), "wss://vdesk.example.org/x/api/agent/ws");
        assert_eq!(c.trust, Some(crate::tls::Trust::Fingerprint([0xab; 32])));
        assert!(c.tls.is_some());
        // Pinning on a plain link is a mistake worth naming.
        let err = Config::from_args(
            &args(&["--cert-sha256", &"ab".repeat(32)]),
            Some(":0".into()),
        )
        .unwrap_err();
        assert_eq!(err.flag, "--cert-sha256");
        let mut a = args(&["--ca-cert", "/nonexistent/ca.pem"]);
        a.controller = "wss://h".into();
        let err = Config::from_args(&a, Some(":0".into())).unwrap_err();
        assert_eq!(err.flag, "--ca-cert");
        assert!(err.problem.contains("/nonexistent/ca.pem"), "{err}");
        let mut a = args(&["--cert-sha256", "nope"]);
        a.controller = "https://h".into();
        assert_eq!(
            Config::from_args(&a, Some(":0".into())).unwrap_err().flag,
            "--cert-sha256"
        );
        assert!(args_err(&["--ca-cert", "x", "--cert-sha256", "y"]).contains("cannot be used"));
    }

    #[test]
    fn keeps_a_path_prefix() {
        let mut a = args(&[]);
        a.controller = "http://host/vdesk/".into();
        let c = Config::from_args(&a, Some(":0".into())).unwrap();
        assert_eq!(c.ws_url.as_str(), "ws://host/vdesk/api/agent/ws");
    }

    #[test]
    fn bad_flags_are_named() {
        let err =
            |a: Args, d: Option<&str>| Config::from_args(&a, d.map(Into::into)).unwrap_err().flag;
        assert_eq!(err(args(&[]), None), "--display");
        assert_eq!(err(args(&["--framerate", "0"]), Some(":0")), "--framerate");
        assert_eq!(err(args(&["--still-fps", "0"]), Some(":0")), "--still-fps");
        assert_eq!(
            err(
                args(&["--framerate", "20", "--still-fps", "30"]),
                Some(":0")
            ),
            "--still-fps"
        );
        assert_eq!(
            err(args(&["--resume-grace", "7200"]), Some(":0")),
            "--resume-grace"
        );
        assert_eq!(
            err(args(&["--min-bitrate-kbps", "5000"]), Some(":0")),
            "--min-bitrate-kbps"
        );
        assert!(Args::try_parse_from(["vdesk-agent", "--metrics-listen", "nope"]).is_err());
        let mut a = args(&[]);
        a.vm_id = "a/b".into();
        assert_eq!(err(a, Some(":0")), "--vm-id");
        let mut a = args(&[]);
        a.controller = "not a url".into();
        assert_eq!(err(a, Some(":0")), "--controller");
        let av1 = args_err(&["--codecs", "vp8,av1"]);
        assert!(av1.contains("rtpav1pay"), "{av1}");
        assert!(args_err(&["--encoder", "fastenc"]).contains("vah264enc"));
        assert_eq!(
            err(
                args(&["--encoder", "nvh264enc", "--codecs", "vp8"]),
                Some(":0")
            ),
            "--encoder"
        );
    }

    fn args_err(extra: &[&str]) -> String {
        let mut v = vec![
            "vdesk-agent",
            "--controller",
            "http://h",
            "--vm-id",
            "a",
            "--token",
            "t",
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap_err().to_string()
    }

    #[test]
    fn encoder_and_vp9_flags() {
        let c = Config::from_args(&args(&[]), Some(":0".into())).unwrap();
        assert_eq!(c.encoder, EncoderPref::Auto);
        let c = Config::from_args(
            &args(&["--codecs", "vp9,h264", "--encoder", "vaapih264enc"]),
            Some(":0".into()),
        )
        .unwrap();
        assert_eq!(c.codecs, vec![Codec::Vp9, Codec::H264]);
        assert_eq!(c.encoder, EncoderPref::Element(crate::encoder::Kind::Vaapi));
    }
}
