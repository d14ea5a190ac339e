//! Start-up configuration in two steps: [`Args`] are the raw flags (each also read from a
//! `VDESK_*` environment variable), [`Config`] is what the controller runs with, checked before
//! any socket exists. A bad value fails here with a message that names its flag. Nothing here
//! opens sockets or logs secrets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vdesk_protocol::{IceServer, VmId};

use crate::auth::{AgentAuth, AgentToken, ControllerSecret};
use crate::cli::Command;
use crate::turn::TurnRest;

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
    /// Instead of serving: print an agent's secret or a viewer link (see `help agent-secret`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Config file (TOML; keys are these long flags without `--`, e.g. `listen = "[::]:8080"`).
    /// Flags and environment variables override it. Without this flag /etc/vdesk/controller.toml
    /// is read if it exists; a file named here must exist.
    #[arg(long, env = "VDESK_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the effective settings (TOML, secrets as "***", each with where it came from) and
    /// exit.
    #[arg(long)]
    pub print_config: bool,

    /// The controller's secret (at least 16 characters; make one with `openssl rand -hex 32`).
    /// Viewer links are signed with it, and each VM's agent secret is derived from it: print the
    /// one for VM ID with `vdesk-controller agent-secret --vm ID` and give it to that VM's
    /// agent as its --token. A VM's secret cannot register any other VM.
    #[arg(
        long,
        env = "VDESK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret: Option<ControllerSecret>,

    /// Bearer token of the admin API (POST /api/admin/links mints viewer links, GET /api/vms
    /// lists VMs). Without it the admin API is off. At least 16 characters.
    #[arg(
        long,
        env = "VDESK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<Password>,

    /// The address browsers use to reach this controller (e.g. https://vdesk.example.org), for
    /// the links the admin API returns. Default: http://<Host header of the admin request>.
    #[arg(long, env = "VDESK_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Address (IP:PORT) to serve browsers and agents on: the viewer is at http://ADDR/vm/{vm_id}
    /// and agents connect to ws://ADDR/api/agent/ws (https:// and wss:// with --tls-cert).
    #[arg(
        long,
        env = "VDESK_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Optional shared secret that lets an agent register as ANY VM (at least 16 characters).
    /// Prefer the per-VM secrets derived from --secret; this one is kept for older set-ups.
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
    /// env comma separated). Needs --turn-secret (time-limited credentials) or
    /// --turn-username and --turn-password (fixed ones).
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

    /// Secret shared with the TURN server (coturn: `use-auth-secret`, `static-auth-secret=`):
    /// each viewer and agent gets its own time-limited TURN credentials (the TURN REST scheme).
    #[arg(
        long,
        env = "VDESK_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub turn_secret: Option<Password>,

    /// Lifetime of TURN credentials made with --turn-secret, in seconds. A session that outlives
    /// it loses its relayed path when the allocation is refreshed.
    #[arg(
        long,
        env = "VDESK_TURN_TTL",
        default_value_t = 86_400,
        value_name = "SECS"
    )]
    pub turn_ttl: u64,

    /// Most live sessions per VM (0 = no limit).
    #[arg(
        long,
        env = "VDESK_MAX_SESSIONS_PER_VM",
        default_value_t = 8,
        value_name = "N"
    )]
    pub max_sessions_per_vm: usize,

    /// Most live sessions per viewer link (token) (0 = no limit).
    #[arg(
        long,
        env = "VDESK_MAX_SESSIONS_PER_TOKEN",
        default_value_t = 4,
        value_name = "N"
    )]
    pub max_sessions_per_token: usize,

    /// Most live sessions in all, created by viewers or adopted from agents after a restart
    /// (at least 1). Bounds the controller's memory whatever the links and agents do.
    #[arg(
        long,
        env = "VDESK_MAX_SESSIONS",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub max_sessions: usize,

    /// A session whose peer connection has not connected this many seconds after its offer
    /// ends (`connect_timeout`), so an abandoned offer does not hold a slot and an encoder.
    #[arg(
        long,
        env = "VDESK_CONNECT_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub connect_timeout: u64,

    /// Sessions one client IP, and one viewer link, may create per minute (burst of as many;
    /// 0 = no limit). Over it: 429 with Retry-After.
    #[arg(
        long,
        env = "VDESK_SESSION_RATE_LIMIT",
        default_value_t = 30,
        value_name = "PER_MIN"
    )]
    pub session_rate_limit: u32,

    /// Candidates one client IP, and one viewer link, may post per minute (0 = no limit).
    #[arg(
        long,
        env = "VDESK_CANDIDATE_RATE_LIMIT",
        default_value_t = 1200,
        value_name = "PER_MIN"
    )]
    pub candidate_rate_limit: u32,

    /// Take the client IP for rate limits from the last X-Forwarded-For entry (set this only
    /// behind a reverse proxy that writes that header; otherwise clients could choose their IP).
    #[arg(long, env = "VDESK_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Seconds a session survives with no open event stream and no request from its viewer.
    #[arg(
        long,
        env = "VDESK_SESSION_IDLE_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub session_idle_timeout: u64,

    /// Serve HTTPS (and wss:// to agents) with this certificate chain (PEM, leaf first).
    /// Needs --tls-key. Without it the controller speaks plain HTTP: put a TLS proxy in front
    /// of it, or keep it on a trusted network (docs/operations.md).
    #[arg(
        long,
        env = "VDESK_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "VDESK_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Seconds a client has to send a request's headers (and to finish the TLS handshake);
    /// a kept-alive connection idle this long is closed too. Slow or silent clients are cut off.
    #[arg(
        long,
        env = "VDESK_HEADER_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub header_timeout: u64,

    /// Most open connections from one client IP, or IPv6 /64 (event streams and agent
    /// WebSockets count); the next one is closed at once. 0 = no limit. Behind a reverse proxy
    /// every client has the proxy's IP: raise it or set 0 there, and let the proxy limit clients.
    #[arg(
        long,
        env = "VDESK_MAX_CONNS_PER_IP",
        default_value_t = 64,
        value_name = "N"
    )]
    pub max_conns_per_ip: usize,

    /// Most event streams open at once for one session (a viewer needs one; a reload briefly
    /// two). The next one gets 429.
    #[arg(
        long,
        env = "VDESK_MAX_STREAMS_PER_SESSION",
        default_value_t = 4,
        value_name = "N"
    )]
    pub max_streams_per_session: usize,

    /// Largest request body accepted, in bytes (SDP offers are a few KiB).
    #[arg(
        long,
        env = "VDESK_MAX_BODY_BYTES",
        default_value_t = 131_072,
        value_name = "BYTES"
    )]
    pub max_body_bytes: usize,

    /// Run as one node of a cluster of controllers sharing state over NATS with JetStream
    /// (docs/operations.md, "Running a cluster"): `nats://HOST:PORT`, `tls://HOST:PORT`, with
    /// `user:password@` or `TOKEN@` if the NATS server wants them; several servers
    /// comma-separated. Without it the controller keeps everything in memory (one process).
    #[arg(
        long,
        env = "VDESK_CLUSTER",
        hide_env_values = true,
        value_name = "NATS_URL"
    )]
    pub cluster: Option<Password>,
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
        "--secret (or VDESK_SECRET) is required: viewer links are signed with it and agent \
         secrets derived from it. Make one with `openssl rand -hex 32`"
    )]
    MissingSecret,
    #[error(
        "--secret must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces; \
         make one with `openssl rand -hex 32`"
    )]
    WeakSecret,
    #[error(
        "--admin-token must be at least {MIN_TOKEN_LEN} printable ASCII characters without \
         spaces; make one with `openssl rand -hex 16`"
    )]
    WeakAdminToken,
    #[error("--public-url {0:?} must be an http:// or https:// URL without a query")]
    PublicUrl(String),
    #[error("--turn-secret needs --turn-server, and excludes --turn-username/--turn-password")]
    TurnSecret,
    #[error("--turn-ttl must be between 60 and 2592000 seconds")]
    TurnTtl,
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
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(String),
    #[error("--header-timeout must be between 1 and 300 seconds")]
    HeaderTimeout,
    #[error("--cluster: {0}")]
    Cluster(String),
    #[error("--max-streams-per-session must be between 1 and 64")]
    MaxStreams,
    #[error("--max-sessions must be at least 1")]
    MaxSessions,
    #[error("--connect-timeout must be between 1 and 3600 seconds")]
    ConnectTimeout,
}

/// The validated configuration the controller runs with.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Signs viewer tokens; agent secrets derive from it.
    pub secret: ControllerSecret,
    /// The older shared agent token (any VM), if configured.
    pub agent_token: Option<AgentToken>,
    pub admin_token: Option<Password>,
    pub public_url: Option<String>,
    /// VMs known before any agent registers.
    pub vms: Vec<VmId>,
    /// Handed to browsers (`GET /api/webrtc/config`) and agents (`welcome`, `offer`) alike.
    pub ice_servers: Vec<IceServer>,
    /// TURN servers with time-limited credentials (--turn-secret).
    pub turn: Option<TurnRest>,
    pub session_idle_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_sessions_per_vm: usize,
    pub max_sessions_per_token: usize,
    /// See `--max-sessions`.
    pub max_sessions: usize,
    /// See `--connect-timeout`.
    pub connect_timeout: Duration,
    pub session_rate_limit: u32,
    pub candidate_rate_limit: u32,
    pub trust_forwarded_for: bool,
    /// TLS for the listener (`--tls-cert`, `--tls-key`); `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Deadline for a request's headers and the TLS handshake.
    pub header_timeout: Duration,
    /// Open connections per client IP (0 = no limit).
    pub max_conns_per_ip: usize,
    /// Event streams open at once per session.
    pub max_streams_per_session: usize,
    /// NATS server URL(s) of the cluster (`--cluster`); `None` = single process, in memory.
    pub cluster: Option<Password>,
}

impl Config {
    /// Defaults of every flag, with `agent_token` as the shared agent token and a random
    /// controller secret (mint viewer tokens with `config.secret`); for tests and embedders.
    pub fn new(agent_token: AgentToken) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secret: ControllerSecret::random(),
            agent_token: Some(agent_token),
            admin_token: None,
            public_url: None,
            vms: Vec::new(),
            ice_servers: Vec::new(),
            turn: None,
            session_idle_timeout: Duration::from_secs(30),
            max_body_bytes: 131_072,
            max_sessions_per_vm: 8,
            max_sessions_per_token: 4,
            max_sessions: 1000,
            connect_timeout: Duration::from_secs(30),
            session_rate_limit: 30,
            candidate_rate_limit: 1200,
            trust_forwarded_for: false,
            tls: None,
            header_timeout: Duration::from_secs(10),
            max_conns_per_ip: 64,
            max_streams_per_session: 4,
            cluster: None,
        }
    }

    /// Who may register as which agent.
    pub fn agent_auth(&self) -> AgentAuth {
        AgentAuth {
            secret: Some(self.secret.clone()),
            shared: self.agent_token.clone(),
        }
    }

    /// Checks every raw flag and builds the configuration.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let secret = args.secret.ok_or(ConfigError::MissingSecret)?;
        if !strong(secret.expose()) {
            return Err(ConfigError::WeakSecret);
        }
        if let Some(t) = &args.agent_token {
            if !strong(t.expose()) {
                return Err(ConfigError::WeakToken);
            }
        }
        if let Some(t) = &args.admin_token {
            if !strong(&t.0) {
                return Err(ConfigError::WeakAdminToken);
            }
        }
        let public_url = match args.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && !u.contains(['?', '#', ' '])
                    && !u.bytes().any(|b| b.is_ascii_control());
                if !ok {
                    return Err(ConfigError::PublicUrl(u.to_owned()));
                }
                Some(u.trim_end_matches('/').to_owned())
            }
        };
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
        let mut turn_rest = None;
        if let Some(turn_secret) = args.turn_secret.filter(|s| !s.0.is_empty()) {
            if turn.is_empty() || args.turn_username.is_some() || args.turn_password.is_some() {
                return Err(ConfigError::TurnSecret);
            }
            if !(60..=2_592_000).contains(&args.turn_ttl) {
                return Err(ConfigError::TurnTtl);
            }
            turn_rest = Some(TurnRest::new(
                turn.clone(),
                turn_secret.0,
                Duration::from_secs(args.turn_ttl),
            ));
        }
        match (
            turn.is_empty() || turn_rest.is_some(),
            args.turn_username,
            args.turn_password,
        ) {
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
        if !(1..=300).contains(&args.header_timeout) {
            return Err(ConfigError::HeaderTimeout);
        }
        if !(1..=64).contains(&args.max_streams_per_session) {
            return Err(ConfigError::MaxStreams);
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::server_config(cert, key).map_err(ConfigError::Tls)?)
            }
            (None, None) => None,
            _ => return Err(ConfigError::Tls("give both, or neither".into())),
        };
        if args.max_sessions == 0 {
            return Err(ConfigError::MaxSessions);
        }
        if !(1..=3600).contains(&args.connect_timeout) {
            return Err(ConfigError::ConnectTimeout);
        }
        if let Some(url) = &args.cluster {
            crate::cluster::check_url(&url.0).map_err(ConfigError::Cluster)?;
        }
        Ok(Self {
            listen,
            secret,
            agent_token: args.agent_token,
            admin_token: args.admin_token,
            public_url,
            vms,
            ice_servers,
            turn: turn_rest,
            session_idle_timeout: Duration::from_secs(args.session_idle_timeout),
            max_body_bytes: args.max_body_bytes,
            max_sessions_per_vm: args.max_sessions_per_vm,
            max_sessions_per_token: args.max_sessions_per_token,
            max_sessions: args.max_sessions,
            connect_timeout: Duration::from_secs(args.connect_timeout),
            session_rate_limit: args.session_rate_limit,
            candidate_rate_limit: args.candidate_rate_limit,
            trust_forwarded_for: args.trust_forwarded_for,
            tls,
            header_timeout: Duration::from_secs(args.header_timeout),
            max_conns_per_ip: args.max_conns_per_ip,
            max_streams_per_session: args.max_streams_per_session,
            cluster: args.cluster,
        })
    }
}

/// Long enough and printable, without spaces.
pub(crate) fn strong(secret: &str) -> bool {
    secret.len() >= MIN_TOKEN_LEN && secret.bytes().all(|b| b.is_ascii_graphic())
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
            .field("secret", &self.secret)
            .field("agent_token", &self.agent_token)
            .field("admin_token", &self.admin_token)
            .field("public_url", &self.public_url)
            .field("turn", &self.turn)
            .field("vms", &self.vms)
            .field("ice_server_urls", &urls)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions_per_vm", &self.max_sessions_per_vm)
            .field("max_sessions_per_token", &self.max_sessions_per_token)
            .field("max_sessions", &self.max_sessions)
            .field("connect_timeout", &self.connect_timeout)
            .field("session_rate_limit", &self.session_rate_limit)
            .field("candidate_rate_limit", &self.candidate_rate_limit)
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("tls", &self.tls.is_some())
            .field("header_timeout", &self.header_timeout)
            .field("max_conns_per_ip", &self.max_conns_per_ip)
            .field("max_streams_per_session", &self.max_streams_per_session)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const SECRET: &str = "controller-secret-0123456789abcdef";

    /// Parses `args` after `--secret SECRET`.
    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["--secret", SECRET];
        all.extend_from_slice(args);
        parse_raw(&all)
    }

    fn parse_raw(args: &[&str]) -> Result<Config, ConfigError> {
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
        assert!(c.agent_token.as_ref().unwrap().matches(TOKEN));
        assert_eq!(c.secret.expose(), SECRET);
        assert_eq!((c.max_sessions_per_vm, c.max_sessions_per_token), (8, 4));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!((c.max_conns_per_ip, c.max_streams_per_session), (64, 4));
        assert!(c.tls.is_none());
        // --tls-cert without --tls-key is refused by the parser.
        let argv = [
            "vdesk-controller",
            "--secret",
            SECRET,
            "--tls-cert",
            "c.pem",
        ];
        let e = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
        assert_eq!(c.max_sessions, 1000);
        assert_eq!(c.connect_timeout, Duration::from_secs(30));
        // The shared agent token is optional.
        assert!(parse(&[]).unwrap().agent_token.is_none());
    }

    #[test]
    fn missing_or_weak_secret_says_how_to_make_one() {
        let e = parse_raw(&["--agent-token", TOKEN]).unwrap_err();
        assert_eq!(e, ConfigError::MissingSecret);
        assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
        assert!(e.to_string().contains("--secret"), "{e}");
        assert_eq!(
            parse_raw(&["--secret", "short"]).unwrap_err(),
            ConfigError::WeakSecret
        );
        assert_eq!(
            parse(&["--admin-token", "short"]).unwrap_err(),
            ConfigError::WeakAdminToken
        );
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
            (&["--header-timeout", "0"], "--header-timeout"),
            (
                &["--max-streams-per-session", "0"],
                "--max-streams-per-session",
            ),
            (
                &[
                    "--tls-cert",
                    "/nonexistent.pem",
                    "--tls-key",
                    "/nonexistent.key",
                ],
                "--tls-cert",
            ),
            (&["--max-sessions", "0"], "--max-sessions"),
            (&["--connect-timeout", "0"], "--connect-timeout"),
            (&["--connect-timeout", "3601"], "--connect-timeout"),
            (&["--public-url", "ftp://x"], "--public-url"),
            (&["--turn-secret", "s"], "--turn-secret"),
            (
                &[
                    "--turn-server",
                    "turn:x",
                    "--turn-secret",
                    "s",
                    "--turn-ttl",
                    "1",
                ],
                "--turn-ttl",
            ),
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
        assert!(!dbg.contains(SECRET), "{dbg}");
    }

    #[test]
    fn turn_secret_makes_time_limited_credentials() {
        let c = parse(&[
            "--turn-server",
            "turn:192.0.2.2:3478",
            "--turn-secret",
            "turnsecret",
            "--turn-ttl",
            "600",
        ])
        .unwrap();
        assert!(c.ice_servers.is_empty(), "no fixed credentials");
        let turn = c.turn.as_ref().unwrap();
        assert_eq!(turn.urls, ["turn:192.0.2.2:3478"]);
        assert_eq!(turn.ttl, Duration::from_secs(600));
        assert!(!format!("{c:?}").contains("turnsecret"));
        assert_eq!(
            parse(&[
                "--turn-server",
                "turn:x",
                "--turn-secret",
                "s",
                "--turn-username",
                "u"
            ])
            .unwrap_err(),
            ConfigError::TurnSecret
        );
    }
}
