//! `vdesk-controller doctor`: checks what a deployment of the controller gets wrong (secrets
//! missing or weak, the listen address taken, the TLS certificate expired or not matching its
//! key, TURN settings that do not go together, a public URL that does not resolve) and says how
//! to fix each, reading the same flags, environment and config file as the server. Never prints
//! a secret: only whether it is set and how long it is.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vdesk_protocol::doctor::{ice_host_port, Check, Report};

use crate::config::{strong, Args, Config, ConfigError, MIN_TOKEN_LEN};

/// Where the package keeps the secrets (the fix texts name it).
const ENV_FILE: &str = "/etc/vdesk/controller.env";
/// A certificate that expires sooner than this is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// How long a network check (resolving a name, probing the listen address) may take.
const NET_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs every check on `args` (flags over environment over file) at `now` (Unix seconds).
pub async fn run(args: &Args, now: u64) -> Report {
    let mut checks = vec![config(args)];
    checks.push(secret(args));
    checks.push(admin_token(args));
    checks.push(agent_token(args));
    checks.push(listen(args).await);
    checks.push(tls(args, now));
    checks.push(turn(args).await);
    checks.push(public_url(args).await);
    Report::new("vdesk-controller", env!("CARGO_PKG_VERSION"), checks)
}

/// The report for a config file that could not be read at all (nothing else can be checked).
pub fn unreadable_config(problem: &str) -> Report {
    Report::new(
        "vdesk-controller",
        env!("CARGO_PKG_VERSION"),
        vec![Check::fail(
            "config",
            problem,
            "fix the file it names (keys are the long flags without `--`; see \
             `vdesk-controller --help`), or point --config / VDESK_CONFIG at the right one",
        )],
    )
}

fn config(args: &Args) -> Check {
    match Config::from_args(args.clone()) {
        Ok(c) => Check::ok(
            "config",
            format!(
                "valid: listen {}, {} VM(s) declared, {} ICE server entr(ies){}",
                c.listen,
                c.vms.len(),
                c.ice_servers.len() + usize::from(c.turn.is_some()),
                match &args.config {
                    Some(p) => format!(", file {}", p.display()),
                    None => String::new(),
                }
            ),
        ),
        Err(e) => Check::fail("config", e.to_string(), fix_for(&e)),
    }
}

fn fix_for(e: &ConfigError) -> String {
    match e {
        ConfigError::MissingSecret | ConfigError::WeakSecret => format!(
            "put VDESK_SECRET=$(openssl rand -hex 32) in {ENV_FILE} (mode 0600), then restart"
        ),
        ConfigError::WeakAdminToken => format!(
            "put VDESK_ADMIN_TOKEN=$(openssl rand -hex 16) in {ENV_FILE}, or remove it to turn \
             the admin API off"
        ),
        ConfigError::Tls(_) => "see the `tls` line below".into(),
        _ => "set the flag it names (or its key in /etc/vdesk/controller.toml, or its VDESK_* \
              variable) to a valid value; `vdesk-controller --help` lists them"
            .into(),
    }
}

fn secret(args: &Args) -> Check {
    match &args.secret {
        None => Check::fail(
            "secret",
            "--secret / VDESK_SECRET is not set: links cannot be signed, agents cannot register",
            format!("put VDESK_SECRET=$(openssl rand -hex 32) in {ENV_FILE} (mode 0600)"),
        ),
        Some(s) if !strong(s.expose()) => Check::fail(
            "secret",
            format!(
                "set but weak: {} characters (at least {MIN_TOKEN_LEN} printable, no spaces)",
                s.expose().len()
            ),
            format!("replace it: VDESK_SECRET=$(openssl rand -hex 32) in {ENV_FILE}; every link and agent secret changes with it"),
        ),
        Some(s) if s.expose().len() < 32 => Check::warn(
            "secret",
            format!("set, {} characters (32 or more recommended)", s.expose().len()),
            "use `openssl rand -hex 32` next time you rotate it",
        ),
        Some(s) => Check::ok("secret", format!("set, {} characters", s.expose().len())),
    }
}

fn admin_token(args: &Args) -> Check {
    match &args.admin_token {
        None => Check::warn(
            "admin-token",
            "not set: the admin API (/api/admin/*, /api/vms) is off",
            format!("to use it, put VDESK_ADMIN_TOKEN=$(openssl rand -hex 16) in {ENV_FILE}"),
        ),
        Some(t) if !strong(&t.0) => Check::fail(
            "admin-token",
            format!(
                "set but weak: {} characters (at least {MIN_TOKEN_LEN} printable, no spaces)",
                t.0.len()
            ),
            format!("put VDESK_ADMIN_TOKEN=$(openssl rand -hex 16) in {ENV_FILE}"),
        ),
        Some(t) if args.secret.as_ref().is_some_and(|s| s.expose() == t.0) => Check::fail(
            "admin-token",
            "the same value as --secret: whoever holds the admin token could forge links",
            format!(
                "give it its own value: VDESK_ADMIN_TOKEN=$(openssl rand -hex 16) in {ENV_FILE}"
            ),
        ),
        Some(t) => Check::ok("admin-token", format!("set, {} characters", t.0.len())),
    }
}

fn agent_token(args: &Args) -> Check {
    match &args.agent_token {
        None => Check::ok("agent-token", "not set: agents use their per-VM secrets"),
        Some(t) if !strong(t.expose()) => Check::fail(
            "agent-token",
            format!("set but weak: {} characters", t.expose().len()),
            format!("remove VDESK_AGENT_TOKEN from {ENV_FILE} and give each agent `vdesk-controller agent-secret --vm ID`"),
        ),
        Some(_) => Check::warn(
            "agent-token",
            "the shared --agent-token is set: whoever holds it may register ANY VM",
            "give each agent its own secret (`vdesk-controller agent-secret --vm ID`) and remove VDESK_AGENT_TOKEN",
        ),
    }
}

async fn listen(args: &Args) -> Check {
    let Ok(addr) = args.listen.trim().parse::<SocketAddr>() else {
        return Check::fail(
            "listen",
            format!("{:?} is not an IP:PORT address", args.listen),
            "set listen = \"127.0.0.1:8080\" (or [::]:8080) in /etc/vdesk/controller.toml",
        );
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok("listen", format!("{addr} is free and can be bound")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => in_use(addr, args).await,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            "listen",
            format!("{addr}: {e} (a port below 1024 needs CAP_NET_BIND_SERVICE)"),
            "`systemctl edit vdesk-controller`, add AmbientCapabilities=CAP_NET_BIND_SERVICE under [Service]; or use a port above 1023",
        ),
        Err(e) => Check::fail(
            "listen",
            format!("{addr}: {e}"),
            "use an address of this host (`ip -brief address`), 0.0.0.0 or [::]",
        ),
    }
}

/// The listen address is taken: by a running vdesk controller (fine) or by something else?
async fn in_use(addr: SocketAddr, args: &Args) -> Check {
    let target = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    let other = Check::fail(
        "listen",
        format!("{addr} is in use by another program"),
        format!(
            "find it with `ss -ltnp 'sport = :{}'` and stop it, or choose another --listen",
            addr.port()
        ),
    );
    if args.tls_cert.is_some() {
        // Not worth a TLS client here: something listens; most likely the controller itself.
        return Check::warn(
            "listen",
            format!("{addr} is in use (by the running controller?)"),
            format!("if vdesk-controller is not running, find the program with `ss -ltnp 'sport = :{}'`", addr.port()),
        );
    }
    match tokio::time::timeout(NET_TIMEOUT, healthz(target)).await {
        Ok(Ok(true)) => Check::ok(
            "listen",
            format!("{addr} is in use by a running vdesk controller (GET /healthz answered ok)"),
        ),
        _ => other,
    }
}

async fn healthz(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: doctor\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.take(4096).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with("\r\n\r\nok"))
}

fn tls(args: &Args, now: u64) -> Check {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            return Check::warn(
                "tls",
                "no --tls-cert: the controller speaks plain HTTP",
                "fine behind a TLS proxy or on a trusted network; otherwise set tls-cert and tls-key (docs/operations.md, TLS)",
            )
        }
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Check::fail(
                "tls",
                "only one of --tls-cert and --tls-key is set",
                "set both, or neither",
            )
        }
    };
    if let Err(e) = crate::tls::server_config(cert, key) {
        return Check::fail(
            "tls",
            e,
            format!(
                "check that {} holds the PEM certificate chain (leaf first) and {} its private key, readable by the service user (e.g. 0640 root:vdesk)",
                cert.display(),
                key.display()
            ),
        );
    }
    let pem = match std::fs::read(cert) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                "tls",
                format!("{}: {e}", cert.display()),
                "make it readable",
            )
        }
    };
    let leaf = match x509_parser::pem::parse_x509_pem(&pem) {
        Ok((_, p)) => p,
        Err(e) => {
            return Check::fail(
                "tls",
                format!("{}: {e}", cert.display()),
                "use a PEM certificate",
            )
        }
    };
    let parsed = match leaf.parse_x509() {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                "tls",
                format!("{}: {e}", cert.display()),
                "use a valid X.509 certificate",
            )
        }
    };
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let renew = format!(
        "renew the certificate ({}) and restart vdesk-controller; agents pinning it with --cert-sha256 need the new fingerprint",
        cert.display()
    );
    let subject = parsed.subject().to_string();
    if now >= not_after {
        return Check::fail(
            "tls",
            format!(
                "{}: certificate ({subject}) expired on {}",
                cert.display(),
                validity.not_after
            ),
            renew,
        );
    }
    if now < not_before {
        return Check::fail(
            "tls",
            format!(
                "{}: certificate ({subject}) is not valid before {}",
                cert.display(),
                validity.not_before
            ),
            "check this host's clock (`timedatectl`), or reissue the certificate",
        );
    }
    let left = Duration::from_secs(u64::try_from(not_after - now).unwrap_or(0));
    let found = format!(
        "{}: ({subject}) matches its key, valid until {} ({} days left)",
        cert.display(),
        validity.not_after,
        left.as_secs() / 86_400
    );
    if left < EXPIRY_WARNING {
        Check::warn("tls", found, renew)
    } else {
        Check::ok("tls", found)
    }
}

async fn turn(args: &Args) -> Check {
    let servers: Vec<&str> = args
        .turn_servers
        .iter()
        .chain(&args.stun_servers)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let secret = args.turn_secret.as_ref().is_some_and(|s| !s.0.is_empty());
    let fixed = args.turn_username.is_some() || args.turn_password.is_some();
    let turn_count = args
        .turn_servers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .count();
    let problem = if secret && turn_count == 0 {
        Some("--turn-secret is set but no --turn-server")
    } else if secret && fixed {
        Some("--turn-secret and --turn-username/--turn-password are both set")
    } else if !secret
        && turn_count > 0
        && !(args.turn_username.is_some() && args.turn_password.is_some())
    {
        Some("--turn-server is set without credentials (--turn-secret, or --turn-username and --turn-password)")
    } else if !secret && turn_count == 0 && fixed {
        Some("--turn-username/--turn-password are set but no --turn-server")
    } else {
        None
    };
    if let Some(p) = problem {
        return Check::fail(
            "turn",
            p,
            "for coturn with `use-auth-secret`: set turn-server and VDESK_TURN_SECRET (its static-auth-secret) and nothing else",
        );
    }
    if servers.is_empty() {
        return Check::ok(
            "turn",
            "no STUN or TURN server configured: peers use host candidates (enough on a LAN)",
        );
    }
    let mut unresolved = Vec::new();
    for url in &servers {
        match ice_host_port(url) {
            Some(hp) => {
                if !resolves(&hp).await {
                    unresolved.push(format!("{url} ({hp} does not resolve)"));
                }
            }
            None => unresolved.push(format!("{url} (not a stun:/turn: URL with a host)")),
        }
    }
    if unresolved.is_empty() {
        Check::ok(
            "turn",
            format!(
                "{} server URL(s), each resolves{}; `vdesk-agent doctor` checks that they answer",
                servers.len(),
                if secret {
                    ", time-limited credentials (--turn-secret)"
                } else {
                    ""
                }
            ),
        )
    } else {
        Check::fail(
            "turn",
            unresolved.join("; "),
            "fix the name in --turn-server / --stun-server, or its DNS record",
        )
    }
}

async fn resolves(host_port: &str) -> bool {
    match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host(host_port)).await {
        Ok(Ok(mut addrs)) => addrs.next().is_some(),
        _ => false,
    }
}

async fn public_url(args: &Args) -> Check {
    let Some(raw) = args
        .public_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Check::warn(
            "public-url",
            "not set: links from the admin API use the Host header of the request",
            "set public-url = \"https://vdesk.example.org\" in /etc/vdesk/controller.toml",
        );
    };
    let Ok(url) = url::Url::parse(raw) else {
        return Check::fail(
            "public-url",
            format!("{raw:?} is not a URL"),
            "use e.g. https://vdesk.example.org",
        );
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Check::fail(
            "public-url",
            format!("{raw:?} has no host"),
            "use e.g. https://vdesk.example.org",
        );
    };
    let hp = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if resolves(&hp).await {
        Check::ok("public-url", format!("{raw}: {host} resolves"))
    } else {
        Check::fail(
            "public-url",
            format!("{raw}: {host} does not resolve from this host"),
            "fix the DNS record (or /etc/hosts), or the name in public-url",
        )
    }
}
