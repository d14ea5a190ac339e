//! The config file under vdesk's command-line flags. A binary's clap `Args` stay the one
//! description of its settings (names, help, environment variables, defaults); this crate reads
//! a TOML file whose keys are the long flag names (kebab-case) and feeds its values to clap as
//! defaults, so the precedence is flags > environment > file > built-in defaults and the
//! binary's own validation runs unchanged. It also renders the effective settings for
//! `--print-config`, secrets (the flags with hidden env values) masked.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

/// Flags that are about the file itself, or clap's own: never keys of the file.
const NOT_KEYS: &[&str] = &["config", "print-config", "help", "version"];

/// What `--print-config` shows instead of a secret.
pub const MASK: &str = "***";

/// A config file that cannot be used; each names the file (and the key).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: unknown key `{key}` (the keys are the long flags without `--`, e.g. `{example}`; see --help)")]
    UnknownKey {
        path: PathBuf,
        key: String,
        example: String,
    },
    #[error("config file {path}: key `{key}`: {problem}")]
    Value {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// The parsed flags, and what `--print-config` needs to say where each value came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub args: T,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    matches: ArgMatches,
    command: Command,
    /// The flags' ids in `T`'s order (`mut_arg` moves the ones the file sets to the end).
    order: Vec<String>,
    from_file: BTreeSet<String>,
}

/// Parses `argv` as `T` with the config file underneath: `--config PATH` or the environment
/// variable `env_var` names it (then it must exist), else `default_path` is read if it exists.
/// `T` must have a `--config` flag (with that env var) and may have `--print-config`.
/// A clap error (bad flag, `--help`) exits the process as clap does; a bad file is returned.
pub fn parse<T: CommandFactory + FromArgMatches>(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    default_path: &Path,
) -> Result<Loaded<T>, FileError> {
    match try_parse::<T>(argv, default_path) {
        Ok(l) => Ok(l),
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::File(e)) => Err(e),
    }
}

/// Either kind of failure of [`try_parse`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// [`parse`] without exiting: clap's errors (and `--help`) are returned.
pub fn try_parse<T: CommandFactory + FromArgMatches>(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    default_path: &Path,
) -> Result<Loaded<T>, ParseError> {
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // First pass, errors ignored (required flags may come from the file): where is the file?
    // (`--help` and `--version` off here, or they would end this pass before `--config`.)
    let pre = T::command()
        .ignore_errors(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .try_get_matches_from(&argv)
        .ok();
    let chosen = pre.and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let (file, table) = match chosen {
        Some(path) => {
            let table = read(&path)?;
            (Some(path), table)
        }
        None if default_path.exists() => (Some(default_path.to_owned()), read(default_path)?),
        None => (None, toml::Table::new()),
    };
    let mut command = T::command();
    let order = command
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut from_file = BTreeSet::new();
    if let Some(path) = &file {
        for (key, value) in &table {
            let values = values_for(&command, path, key, value)?;
            let id = arg_by_long(&command, key)
                .map(|a| a.get_id().to_string())
                .unwrap_or_default();
            command = with_default(command, &id, &values);
            // The same flag on a subcommand (e.g. the controller's `mint-link --secret`).
            let subs: Vec<String> = command
                .get_subcommands()
                .filter(|s| arg_by_long(s, key).is_some())
                .map(|s| s.get_name().to_owned())
                .collect();
            for sub in subs {
                command = command.mut_subcommand(sub, |s| {
                    let id = arg_by_long(&s, key)
                        .map(|a| a.get_id().to_string())
                        .unwrap_or_default();
                    with_default(s, &id, &values)
                });
            }
            from_file.insert(id);
        }
    }
    let matches = command.clone().try_get_matches_from(&argv)?;
    let args = T::from_arg_matches(&matches)?;
    Ok(Loaded {
        args,
        file,
        matches,
        command,
        order,
        from_file,
    })
}

fn read(path: &Path) -> Result<toml::Table, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| FileError::Syntax {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

fn arg_by_long<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(key) && !NOT_KEYS.contains(&key))
}

/// Whether `arg` takes several values (a repeatable flag).
fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// The file's value for `key` as the strings clap parses.
fn values_for(
    command: &Command,
    path: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<String>, FileError> {
    let Some(arg) = arg_by_long(command, key) else {
        let example = command
            .get_arguments()
            .filter_map(Arg::get_long)
            .find(|l| !NOT_KEYS.contains(l))
            .unwrap_or("listen")
            .to_owned();
        return Err(FileError::UnknownKey {
            path: path.to_owned(),
            key: key.to_owned(),
            example,
        });
    };
    let bad = |problem: &str| FileError::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        problem: problem.to_owned(),
    };
    let scalar = |v: &toml::Value| -> Result<String, FileError> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(bad("expected a string, number or boolean")),
        }
    };
    if is_switch(arg) && !matches!(value, toml::Value::Boolean(_)) {
        return Err(bad("expected true or false"));
    }
    match value {
        toml::Value::Array(items) if repeatable(arg) => items.iter().map(scalar).collect(),
        toml::Value::Array(_) => Err(bad("takes one value, not a list")),
        v => Ok(vec![scalar(v)?]),
    }
}

fn with_default(command: Command, id: &str, values: &[String]) -> Command {
    let values: Vec<clap::builder::OsStr> = values.iter().map(|v| v.clone().into()).collect();
    command.mut_arg(id, |a| {
        // `--help` shows the file's values as defaults: never a secret's.
        let secret = a.is_hide_env_values_set();
        // A required flag given in the file is no longer required on the command line.
        a.required(false)
            .default_values(values)
            .hide_default_value(secret)
    })
}

impl<T> Loaded<T> {
    /// The effective settings as TOML that a config file could hold: every key of the file,
    /// each with a comment saying where its value came from; secrets as `"***"`; unset ones as
    /// comments.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.file {
            Some(p) => out.push_str(&format!(
                "# effective settings; config file: {}\n",
                p.display()
            )),
            None => out.push_str("# effective settings; no config file was read\n"),
        }
        let args = self
            .order
            .iter()
            .filter_map(|id| self.command.get_arguments().find(|a| a.get_id() == id));
        for arg in args {
            let Some(long) = arg.get_long() else { continue };
            if NOT_KEYS.contains(&long) {
                continue;
            }
            let id = arg.get_id().as_str();
            let Some(raw) = self.matches.get_raw(id) else {
                out.push_str(&format!("# {long} is not set\n"));
                continue;
            };
            let raw: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            let source = match self.matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => arg
                    .get_env()
                    .map(|e| format!("env {}", e.to_string_lossy()))
                    .unwrap_or_else(|| "env".to_owned()),
                _ if self.from_file.contains(id) => "file".to_owned(),
                _ => "default".to_owned(),
            };
            let value = if arg.is_hide_env_values_set() {
                toml::Value::String(MASK.to_owned())
            } else if repeatable(arg) {
                toml::Value::Array(raw.into_iter().map(toml::Value::String).collect())
            } else {
                let one = raw.into_iter().next().unwrap_or_default();
                if is_switch(arg) {
                    toml::Value::Boolean(one == "true")
                } else if let Ok(i) = one.parse::<i64>() {
                    toml::Value::Integer(i)
                } else {
                    toml::Value::String(one)
                }
            };
            out.push_str(&format!("{long} = {value}  # {source}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    /// A stand-in for a binary's flags (no environment variables: tests share the process).
    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        print_config: bool,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, hide_env_values = true)]
        secret: Option<String>,
        #[arg(long)]
        vm_id: String,
        #[arg(long = "vm", value_delimiter = ',')]
        vms: Vec<String>,
        #[arg(long, default_value_t = 8)]
        max_sessions: usize,
        #[arg(long)]
        trust: bool,
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vdesk-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(argv: &[&str]) -> Result<Loaded<Args>, ParseError> {
        try_parse::<Args>(
            std::iter::once("bin").chain(argv.iter().copied()),
            Path::new("/nonexistent/vdesk.toml"),
        )
    }

    #[test]
    fn the_file_is_under_the_flags_and_over_the_defaults() {
        let path = file(
            "prec.toml",
            "listen = \"0.0.0.0:1\"\nvm-id = \"from-file\"\nvm = [\"a\", \"b\"]\nmax-sessions = 3\ntrust = true\n",
        );
        let p = path.to_str().unwrap();
        let l = load(&["--config", p]).unwrap();
        assert_eq!(l.args.listen, "0.0.0.0:1");
        // A required flag may come from the file.
        assert_eq!(l.args.vm_id, "from-file");
        assert_eq!(l.args.vms, ["a", "b"]);
        assert_eq!(l.args.max_sessions, 3);
        assert!(l.args.trust);
        let l = load(&[
            "--config",
            p,
            "--listen",
            "[::]:2",
            "--vm",
            "c",
            "--max-sessions",
            "5",
        ])
        .unwrap();
        assert_eq!(l.args.listen, "[::]:2");
        assert_eq!(l.args.vms, ["c"]);
        assert_eq!(l.args.max_sessions, 5);
        assert_eq!(l.args.vm_id, "from-file");
        // Without a file: the built-in defaults, and required flags are required again.
        let l = load(&["--vm-id", "x"]).unwrap();
        assert_eq!(
            (l.args.listen.as_str(), l.args.max_sessions),
            ("127.0.0.1:8080", 8)
        );
        assert!(l.file.is_none());
        assert!(matches!(load(&[]), Err(ParseError::Clap(_))));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let path = file(
            "unknown.toml",
            "vm-id = \"x\"\nlisten-address = \"0.0.0.0:1\"\n",
        );
        let e = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `listen-address`"), "{e}");
        assert!(e.contains(path.to_str().unwrap()), "{e}");
        for (text, key) in [
            ("config = \"/x\"", "config"),
            ("print-config = true", "print-config"),
            ("help = true", "help"),
        ] {
            let path = file("meta.toml", text);
            let e = load(&["--config", path.to_str().unwrap()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown key `{key}`")), "{e}");
        }
        let path = file("list.toml", "vm-id = [\"a\", \"b\"]\n");
        let e = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `vm-id`: takes one value"), "{e}");
        let path = file("switch.toml", "vm-id = \"x\"\ntrust = \"yes\"\n");
        let e = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `trust`: expected true or false"), "{e}");
        let path = file("syntax.toml", "vm-id = \n");
        let e = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        // A file named explicitly must exist; the default one need not.
        let e = load(&["--config", "/nonexistent/x.toml", "--vm-id", "x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn print_config_masks_secrets_says_where_each_value_came_from_and_parses_back() {
        let path = file(
            "print.toml",
            "secret = \"file-secret-0123456789\"\nvm-id = \"desk\"\nmax-sessions = 3\n",
        );
        let p = path.to_str().unwrap();
        let l = load(&["--config", p, "--listen", "[::]:9", "--print-config"]).unwrap();
        assert!(l.args.print_config);
        let out = l.render();
        assert!(!out.contains("file-secret"), "{out}");
        assert!(out.contains("secret = \"***\"  # file"), "{out}");
        assert!(out.contains("listen = \"[::]:9\"  # flag"), "{out}");
        assert!(out.contains("max-sessions = 3  # file"), "{out}");
        assert!(out.contains("trust = false  # default"), "{out}");
        assert!(out.contains("# vm is not set"), "{out}");
        let table: toml::Table = out.parse().unwrap();
        assert_eq!(table["max-sessions"].as_integer(), Some(3));
        assert_eq!(table["vm-id"].as_str(), Some("desk"));
        assert_eq!(table["secret"].as_str(), Some(MASK));
        // The output, as a file, gives the same settings (the masked secret aside).
        let again = file("again.toml", &out.replace("secret = \"***\"", ""));
        let l2 = load(&["--config", again.to_str().unwrap()]).unwrap();
        assert_eq!(l2.args.listen, "[::]:9");
        assert_eq!(l2.args.max_sessions, 3);
        assert!(l2.args.secret.is_none());
    }

    #[test]
    fn help_shows_the_files_values_but_never_a_secret() {
        let path = file(
            "help.toml",
            "secret = \"file-secret-0123456789\"\nvm-id = \"desk\"\n",
        );
        let Err(ParseError::Clap(help)) = load(&["--config", path.to_str().unwrap(), "--help"])
        else {
            panic!("--help is a clap 'error'")
        };
        let help = help.to_string();
        assert!(help.contains("[default: desk]"), "{help}");
        assert!(!help.contains("file-secret"), "{help}");
        // The same with the file in its default place.
        let Err(ParseError::Clap(help)) =
            try_parse::<Args>(["bin", "--help"], &path).map(|l| l.args)
        else {
            panic!("--help is a clap 'error'")
        };
        let help = help.to_string();
        assert!(help.contains("[default: desk]"), "{help}");
        assert!(!help.contains("file-secret"), "{help}");
    }
}
