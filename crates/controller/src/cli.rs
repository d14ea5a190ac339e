//! The operator's subcommands, which print a secret or a link and exit without serving:
//! `vdesk-controller agent-secret --vm ID` and `vdesk-controller mint-link --vm ID ...`. Also
//! the parsing of lifetimes such as `90s`, `15m`, `1h`, `7d`. No sockets here.

use clap::{Subcommand, ValueEnum};
use vdesk_protocol::{ClipboardPolicy, Permission, VmId};

use crate::auth::ControllerSecret;
use crate::viewer_token::{self, Extras, MAX_TTL_SECS};

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print the secret the agent of VM ID must present (give it to that vdesk-agent as its
    /// --token / VDESK_AGENT_TOKEN). It is derived from --secret and registers that VM only.
    AgentSecret {
        /// The VM.
        #[arg(long, value_name = "ID")]
        vm: String,
        /// The controller's secret (the same as the server's --secret).
        #[arg(
            long,
            env = "VDESK_SECRET",
            hide_env_values = true,
            value_name = "SECRET"
        )]
        secret: Option<ControllerSecret>,
    },
    /// Check this controller's settings (flags, environment, config file, as the server reads
    /// them): secrets set and strong, the listen address, the TLS certificate and key, TURN,
    /// the public URL. One line per check (ok, warn, FAIL and how to fix it); exit status 0
    /// when nothing failed. Never prints a secret. Put the server's flags before `doctor`.
    Doctor {
        /// Print the report as JSON (docs/operations.md, "Diagnose").
        #[arg(long)]
        json: bool,
    },
    /// Print a viewer link (URL with a signed token) for VM ID, valid for --ttl.
    MintLink {
        /// The VM the link opens.
        #[arg(long, value_name = "ID")]
        vm: String,
        /// view: watch only; control: also use the mouse and keyboard; admin: control, and
        /// see the other viewers of the VM.
        #[arg(long, value_enum, default_value = "view")]
        permission: PermissionArg,
        /// Which way the clipboard may travel in this link's sessions: both, to-vm (browser to
        /// VM only), from-vm (VM to browser only) or off. View links never send to the VM.
        #[arg(long, value_enum, default_value = "both")]
        clipboard: ClipboardArg,
        /// The viewer's display name, shown to the VM's other viewers (at most 40 characters).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// How long the link works: seconds, or a number with s, m, h or d (at most 30d).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        ttl: String,
        /// The controller's address as browsers reach it.
        #[arg(
            long,
            env = "VDESK_PUBLIC_URL",
            default_value = "http://127.0.0.1:8080",
            value_name = "URL"
        )]
        base_url: String,
        /// Print only the token, not the URL.
        #[arg(long)]
        token_only: bool,
        /// The controller's secret (the same as the server's --secret).
        #[arg(
            long,
            env = "VDESK_SECRET",
            hide_env_values = true,
            value_name = "SECRET"
        )]
        secret: Option<ControllerSecret>,
    },
}

/// `--permission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionArg {
    View,
    Control,
    Admin,
}

impl From<PermissionArg> for Permission {
    fn from(p: PermissionArg) -> Self {
        match p {
            PermissionArg::View => Permission::View,
            PermissionArg::Control => Permission::Control,
            PermissionArg::Admin => Permission::Admin,
        }
    }
}

/// `--clipboard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClipboardArg {
    Both,
    ToVm,
    FromVm,
    Off,
}

impl From<ClipboardArg> for ClipboardPolicy {
    fn from(c: ClipboardArg) -> Self {
        match c {
            ClipboardArg::Both => ClipboardPolicy::Both,
            ClipboardArg::ToVm => ClipboardPolicy::ToVm,
            ClipboardArg::FromVm => ClipboardPolicy::FromVm,
            ClipboardArg::Off => ClipboardPolicy::Off,
        }
    }
}

/// A subcommand that cannot do its job, with a message naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("--secret (or VDESK_SECRET) is required: the controller's secret")]
    MissingSecret,
    #[error("--vm {0:?}: {1}")]
    Vm(String, String),
    #[error("--ttl {0:?}: use seconds or a number with s, m, h or d, from 1s to 30d")]
    Ttl(String),
    #[error("--base-url {0:?} must be an http:// or https:// URL")]
    BaseUrl(String),
    #[error("--name {0:?}: {1}")]
    Name(String, String),
    #[error("doctor runs from main (it needs the whole configuration)")]
    Doctor,
}

/// Runs `cmd` at `now` (unix seconds); returns what to print.
pub fn run(cmd: &Command, now: u64) -> Result<String, CliError> {
    match cmd {
        Command::AgentSecret { vm, secret } => {
            let secret = secret.as_ref().ok_or(CliError::MissingSecret)?;
            Ok(secret.agent_secret(&vm_id(vm)?))
        }
        Command::Doctor { .. } => Err(CliError::Doctor),
        Command::MintLink {
            vm,
            permission,
            clipboard,
            name,
            ttl,
            base_url,
            token_only,
            secret,
        } => {
            let secret = secret.as_ref().ok_or(CliError::MissingSecret)?;
            let vm = vm_id(vm)?;
            let ttl = parse_ttl(ttl).ok_or_else(|| CliError::Ttl(ttl.clone()))?;
            let name = name
                .as_deref()
                .map(|n| viewer_token::check_name(n).map_err(|e| CliError::Name(n.to_owned(), e)))
                .transpose()?;
            let extras = Extras {
                clipboard: (*clipboard).into(),
                name,
            };
            let token =
                viewer_token::mint_with(secret, &vm, (*permission).into(), now + ttl, &extras);
            if *token_only {
                return Ok(token);
            }
            let base = base_url.trim().trim_end_matches('/');
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(CliError::BaseUrl(base_url.clone()));
            }
            Ok(viewer_link(base, &vm, &token))
        }
    }
}

/// `{base}/vm/{vm}?token={token}` (tokens are URL-safe as they are).
pub fn viewer_link(base: &str, vm: &VmId, token: &str) -> String {
    format!("{base}/vm/{vm}?token={token}")
}

fn vm_id(raw: &str) -> Result<VmId, CliError> {
    VmId::new(raw.trim()).map_err(|e| CliError::Vm(raw.to_owned(), e.problem.clone()))
}

/// `90`, `90s`, `15m`, `1h`, `7d` -> seconds, within 1 s ..= 30 days.
pub fn parse_ttl(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let (num, unit) = match raw.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&raw[..i], c),
        _ => (raw, 's'),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let secs = num.trim().parse::<u64>().ok()?.checked_mul(mult)?;
    (1..=MAX_TTL_SECS).contains(&secs).then_some(secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("90s"), Some(90));
        assert_eq!(parse_ttl("15m"), Some(900));
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("7d"), Some(7 * 86_400));
        for bad in ["", "0", "h", "1x", "-1h", "31d", "99999999999999999999d"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }

    #[test]
    fn mint_link_prints_a_verifiable_url() {
        let secret = ControllerSecret::new("cli-secret-0123456789abcdef");
        let cmd = Command::MintLink {
            vm: "demo".into(),
            permission: PermissionArg::Control,
            clipboard: ClipboardArg::Both,
            name: None,
            ttl: "1h".into(),
            base_url: "http://127.0.0.1:9000/".into(),
            token_only: false,
            secret: Some(secret.clone()),
        };
        let url = run(&cmd, 1_000).unwrap();
        let token = url
            .strip_prefix("http://127.0.0.1:9000/vm/demo?token=")
            .unwrap();
        let claims = viewer_token::verify(&secret, token, 1_001).unwrap();
        assert_eq!(claims.permission, Permission::Control);
        assert_eq!(claims.expires, 4_600);
    }

    #[test]
    fn mint_link_carries_clipboard_name_and_admin() {
        let secret = ControllerSecret::new("cli-secret-0123456789abcdef");
        let cmd = |clipboard, name: Option<&str>| Command::MintLink {
            vm: "demo".into(),
            permission: PermissionArg::Admin,
            clipboard,
            name: name.map(str::to_owned),
            ttl: "1h".into(),
            base_url: "http://127.0.0.1:9000".into(),
            token_only: true,
            secret: Some(secret.clone()),
        };
        let token = run(&cmd(ClipboardArg::ToVm, Some(" Ada ")), 1_000).unwrap();
        let c = viewer_token::verify(&secret, &token, 1_001).unwrap();
        assert_eq!(c.permission, Permission::Admin);
        assert_eq!(c.clipboard, ClipboardPolicy::ToVm);
        assert_eq!(c.name.as_deref(), Some("Ada"));
        let token = run(&cmd(ClipboardArg::Off, None), 1_000).unwrap();
        let c = viewer_token::verify(&secret, &token, 1_001).unwrap();
        assert_eq!((c.clipboard, c.name), (ClipboardPolicy::Off, None));
        let e = run(&cmd(ClipboardArg::Both, Some(&"n".repeat(41))), 1_000).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        // The flags as an operator types them.
        use clap::Parser;
        let args = crate::Args::try_parse_from([
            "vdesk-controller",
            "mint-link",
            "--vm",
            "demo",
            "--permission",
            "admin",
            "--clipboard",
            "from-vm",
            "--name",
            "Bob",
        ])
        .unwrap();
        assert!(matches!(
            args.command,
            Some(Command::MintLink {
                clipboard: ClipboardArg::FromVm,
                permission: PermissionArg::Admin,
                ..
            })
        ));
    }

    #[test]
    fn agent_secret_matches_the_derivation() {
        let secret = ControllerSecret::new("cli-secret-0123456789abcdef");
        let cmd = Command::AgentSecret {
            vm: "demo".into(),
            secret: Some(secret.clone()),
        };
        assert_eq!(
            run(&cmd, 0).unwrap(),
            secret.agent_secret(&VmId::new("demo").unwrap())
        );
        let cmd = Command::AgentSecret {
            vm: "a/b".into(),
            secret: Some(secret),
        };
        assert!(run(&cmd, 0).unwrap_err().to_string().contains("--vm"));
    }
}
