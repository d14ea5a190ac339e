//! Start-up configuration in two steps: [`Args`] are the raw flags (each also read from a
//! `VDESK_*` environment variable), [`Config`] is what the controller runs with, checked before
//! any socket exists. A bad value fails here with a message that names its flag. Nothing here
//! opens sockets or logs secrets.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vdesk_protocol::{IceServer, Permission, VmId};

use crate::auth::AgentToken;

/// Raw command line of `vdesk-controller`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vdesk-controller",
    version,
    about = "vdesk controller: serves the viewer page and relays WebRTC signalling between \
             browsers and the vdesk agents running inside VMs",
    long_about = None
)]
pub struct Args {
    /// Address (IP:PORT) to serve browsers and agents on: the viewer is at http://ADDR/vm/{vm_id}
    /// and agents connect to ws://ADDR/api/agent/ws.
    #[arg(
        long,
        env = "VDESK_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Shared secret every agent must present (at least 16 characters). Make one with
    /// `openssl rand -hex 16` and give the same value to each vdesk-agent.
    #[arg(
        long,
        env = "VDESK_AGENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub agent_token: Option<AgentToken>,

    /// A VM known from the start (repeatable; the env var is comma separated). Its page answers
    /// "agent offline" (503) until its agent connects, instead of "not found". VMs whose agent
    /// registers become known too.
    #[arg(
        long = "vm",
        env = "VDESK_VMS",
        value_delimiter = ',',
        value_name = "ID"
    )]
    pub vms: Vec<String>,

    /// STUN server for both peers, e.g. stun:stun.example.org:3478 (repeatable; env comma
    /// separated). Without any, peers use host candidates only, which is enough on a LAN.
    #[arg(
        long = "stun-server",
        env = "VDESK_STUN_SERVERS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub stun_servers: Vec<String>,

    /// TURN server for both peers, e.g. turn:turn.example.org:3478?transport=udp (repeatable;
    /// env comma separated). Needs --turn-username and --turn-password.
    #[arg(
        long = "turn-server",
        env = "VDESK_TURN_SERVERS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub turn_servers: Vec<String>,

    /// User name for the TURN server(s).
    #[arg(long, env = "VDESK_TURN_USERNAME", value_name = "NAME")]
    pub turn_username: Option<String>,

    /// Password for the TURN server(s).
    #[arg(
        long,
        env = "VDESK_TURN_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub turn_password: Option<Password>,

    /// Seconds a session survives with no open event stream and no request from its viewer.
    #[arg(
        long,
        env = "VDESK_SESSION_IDLE_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub session_idle_timeout: u64,

    /// Largest request body accepted, in bytes (SDP offers are a few KiB).
    #[arg(
        long,
        env = "VDESK_MAX_BODY_BYTES",
        default_value_t = 131_072,
        value_name = "BYTES"
    )]
    pub max_body_bytes: usize,

    /// What every viewer may do until viewer tokens decide it: control (input, clipboard,
    /// resize) or view (watch only; the agent drops its input). Tests use `view`.
    #[arg(
        long,
        env = "VDESK_DEFAULT_PERMISSION",
        default_value = "control",
        value_parser = ["view", "control"],
        value_name = "view|control"
    )]
    pub default_permission: String,
}

/// A password read from the command line; `Debug` never shows it.
#[derive(Clone)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Smallest token we accept: 16 characters (`openssl rand -hex 8` would be too weak).
pub const MIN_TOKEN_LEN: usize = 16;
/// Bounds of `--max-body-bytes`: an offer must fit, and a body must not eat the host's memory.
pub const MIN_BODY_BYTES: usize = 4096;
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A flag whose value cannot be used, named as the operator typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--agent-token (or VDESK_AGENT_TOKEN) is required: it is the secret every agent presents. \
         Make one with `openssl rand -hex 16` and give the same value to each vdesk-agent"
    )]
    MissingToken,
    #[error(
        "--agent-token must be at least {MIN_TOKEN_LEN} printable ASCII characters without \
         spaces; make one with `openssl rand -hex 16`"
    )]
    WeakToken,
    #[error("--listen {0:?} is not an IP:PORT address (for example 127.0.0.1:8080 or [::]:8080)")]
    Listen(String),
    #[error("--vm {value:?}: {problem}")]
    Vm { value: String, problem: String },
    #[error("--stun-server {0:?} must be a stun: or stuns: URL, e.g. stun:192.0.2.1:3478")]
    Stun(String),
    #[error("--turn-server {0:?} must be a turn: or turns: URL, e.g. turn:192.0.2.1:3478")]
    Turn(String),
    #[error("--turn-server needs both --turn-username and --turn-password")]
    TurnCredentialsMissing,
    #[error("--turn-username/--turn-password are set but no --turn-server is")]
    TurnCredentialsUnused,
    #[error("--session-idle-timeout must be between 1 and 86400 seconds")]
    IdleTimeout,
    #[error("--max-body-bytes must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES}")]
    MaxBodyBytes,
}

/// The validated configuration the controller runs with.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub agent_token: AgentToken,
    /// VMs known before any agent registers.
    pub vms: Vec<VmId>,
    /// Handed to browsers (`GET /api/webrtc/config`) and agents (`welcome`, `offer`) alike.
    pub ice_servers: Vec<IceServer>,
    pub session_idle_timeout: Duration,
    pub max_body_bytes: usize,
    /// Sent with every offer (until viewer tokens decide per viewer).
    pub default_permission: Permission,
}

impl Config {
    /// Defaults of every flag, with `agent_token`; for tests and embedders.
    pub fn new(agent_token: AgentToken) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            agent_token,
            vms: Vec::new(),
            ice_servers: Vec::new(),
            session_idle_timeout: Duration::from_secs(30),
            max_body_bytes: 131_072,
            default_permission: Permission::Control,
        }
    }

    /// Checks every raw flag and builds the configuration.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let agent_token = args.agent_token.ok_or(ConfigError::MissingToken)?;
        let t = agent_token.expose();
        if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::WeakToken);
        }
        let listen = args
            .listen
            .trim()
            .parse()
            .map_err(|_| ConfigError::Listen(args.listen.clone()))?;

        let mut vms: Vec<VmId> = Vec::new();
        for raw in args.vms.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let vm = VmId::new(raw).map_err(|e| ConfigError::Vm {
                value: raw.to_owned(),
                problem: e.to_string(),
            })?;
            if !vms.contains(&vm) {
                vms.push(vm);
            }
        }

        let mut ice_servers = Vec::new();
        let stun = clean_urls(&args.stun_servers, &["stun:", "stuns:"], ConfigError::Stun)?;
        if !stun.is_empty() {
            ice_servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        let turn = clean_urls(&args.turn_servers, &["turn:", "turns:"], ConfigError::Turn)?;
        match (turn.is_empty(), args.turn_username, args.turn_password) {
            (true, None, None) => {}
            (true, _, _) => return Err(ConfigError::TurnCredentialsUnused),
            (false, Some(user), Some(pass)) if !user.is_empty() && !pass.0.is_empty() => {
                ice_servers.push(IceServer {
                    urls: turn,
                    username: Some(user),
                    credential: Some(pass.0),
                })
            }
            (false, _, _) => return Err(ConfigError::TurnCredentialsMissing),
        }

        if !(1..=86_400).contains(&args.session_idle_timeout) {
            return Err(ConfigError::IdleTimeout);
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&args.max_body_bytes) {
            return Err(ConfigError::MaxBodyBytes);
        }
        Ok(Self {
            listen,
            agent_token,
            vms,
            ice_servers,
            session_idle_timeout: Duration::from_secs(args.session_idle_timeout),
            max_body_bytes: args.max_body_bytes,
            default_permission: if args.default_permission == "view" {
                Permission::View
            } else {
                Permission::Control
            },
        })
    }
}

fn clean_urls(
    raw: &[String],
    schemes: &[&str],
    err: fn(String) -> ConfigError,
) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for url in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let ok = schemes
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len())
            && !url.bytes().any(|b| b.is_ascii_control() || b == b' ');
        if !ok {
            return Err(err(url.to_owned()));
        }
        out.push(url.to_owned());
    }
    Ok(out)
}

/// Redacts the token and TURN credentials.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self
            .ice_servers
            .iter()
            .flat_map(|s| s.urls.iter().map(String::as_str))
            .collect();
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("agent_token", &self.agent_token)
            .field("vms", &self.vms)
            .field("ice_server_urls", &urls)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("default_permission", &self.default_permission)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("vdesk-controller").chain(args.iter().copied());
        Config::from_args(Args::try_parse_from(argv).expect("clap accepts the flags"))
    }

    #[test]
    fn defaults() {
        let c = parse(&["--agent-token", TOKEN]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.session_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.max_body_bytes, 131_072);
        assert!(c.vms.is_empty() && c.ice_servers.is_empty());
        assert!(c.agent_token.matches(TOKEN));
    }

    #[test]
    fn missing_or_weak_token_says_how_to_make_one() {
        let e = parse(&[]).unwrap_err();
        assert_eq!(e, ConfigError::MissingToken);
        assert!(e.to_string().contains("openssl rand -hex 16"), "{e}");
        assert!(e.to_string().contains("--agent-token"), "{e}");
        assert_eq!(
            parse(&["--agent-token", "short"]).unwrap_err(),
            ConfigError::WeakToken
        );
        assert_eq!(
            parse(&["--agent-token", "has a space in it 0123"]).unwrap_err(),
            ConfigError::WeakToken
        );
    }

    #[test]
    fn every_bad_value_names_its_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "localhost"], "--listen"),
            (&["--vm", "a/b"], "--vm"),
            (&["--stun-server", "http://x"], "--stun-server"),
            (&["--turn-server", "stun:x"], "--turn-server"),
            (&["--turn-server", "turn:x"], "--turn-server"),
            (&["--turn-username", "u"], "--turn-username"),
            (&["--session-idle-timeout", "0"], "--session-idle-timeout"),
            (&["--max-body-bytes", "10"], "--max-body-bytes"),
        ];
        for (args, flag) in cases {
            let mut all = vec!["--agent-token", TOKEN];
            all.extend_from_slice(args);
            let e = parse(&all).expect_err(flag);
            assert!(e.to_string().contains(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn vms_and_ice_servers() {
        let c = parse(&[
            "--agent-token",
            TOKEN,
            "--vm",
            "demo",
            "--vm",
            "b,demo",
            "--stun-server",
            "stun:192.0.2.1:3478",
            "--turn-server",
            "turn:192.0.2.2:3478",
            "--turn-username",
            "u",
            "--turn-password",
            "p",
        ])
        .unwrap();
        let vms: Vec<&str> = c.vms.iter().map(VmId::as_str).collect();
        assert_eq!(vms, ["demo", "b"]);
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.ice_servers[0].urls, ["stun:192.0.2.1:3478"]);
        assert_eq!(c.ice_servers[1].username.as_deref(), Some("u"));
        assert_eq!(c.ice_servers[1].credential.as_deref(), Some("p"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(TOKEN) && !dbg.contains("\"p\""), "{dbg}");
    }
}
