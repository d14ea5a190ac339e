//! The controller's config file through the real binary: precedence flags > environment >
//! file > defaults, `--print-config` (secrets masked, output is TOML), and the errors for an
//! unknown key or a missing `--config` file.

use std::process::{Command, Output};

const SECRET: &str = "file-secret-0123456789abcdef";

fn controller(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vdesk-controller"));
    // Only what the test sets: no VDESK_* from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("VDESK_") {
            cmd.env_remove(k);
        }
    }
    // Not the machine's /etc/vdesk/controller.toml, if a package installed one: an empty file.
    cmd.env("VDESK_CONFIG", "/dev/null");
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("vdesk-controller runs")
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vdesk-cfg-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn file_then_env_then_flag_and_print_config_masks_secrets() {
    let dir = tmpdir("prec");
    let path = write(
        &dir,
        "controller.toml",
        &format!(
            "secret = \"{SECRET}\"\nadmin-token = \"admin-token-0123456789\"\n\
             listen = \"127.0.0.1:9001\"\nmax-sessions = 7\nmax-body-bytes = 65536\n\
             header-timeout = 20\nvm = [\"a\", \"b\"]\n"
        ),
    );
    let out = controller(
        &[
            "--config",
            &path,
            "--print-config",
            "--max-body-bytes",
            "8192",
        ],
        &[
            ("VDESK_MAX_SESSIONS", "9"),
            ("VDESK_MAX_BODY_BYTES", "16384"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !text.contains(SECRET) && !text.contains("admin-token-0123"),
        "{text}"
    );
    let t: toml::Table = text.parse().expect("--print-config prints TOML");
    assert_eq!(t["secret"].as_str(), Some("***"));
    assert_eq!(t["admin-token"].as_str(), Some("***"));
    assert_eq!(
        t["listen"].as_str(),
        Some("127.0.0.1:9001"),
        "file over default"
    );
    assert_eq!(t["max-sessions"].as_integer(), Some(9), "env over file");
    assert_eq!(
        t["max-body-bytes"].as_integer(),
        Some(8192),
        "flag over env"
    );
    assert_eq!(t["header-timeout"].as_integer(), Some(20));
    assert_eq!(t["session-idle-timeout"].as_integer(), Some(30), "default");
    assert_eq!(t["vm"].as_array().map(Vec::len), Some(2));
    assert!(text.contains("# env VDESK_MAX_SESSIONS"), "{text}");

    // The file's secret reaches the subcommands too, and VDESK_CONFIG names the file.
    let out = controller(&["agent-secret", "--vm", "a"], &[("VDESK_CONFIG", &path)]);
    assert!(out.status.success(), "{out:?}");
    let with_flag = controller(&["agent-secret", "--vm", "a", "--secret", SECRET], &[]);
    assert_eq!(out.stdout, with_flag.stdout);
}

#[test]
fn unknown_keys_and_missing_files_are_errors_that_name_them() {
    let dir = tmpdir("err");
    let path = write(
        &dir,
        "bad.toml",
        &format!("secret = \"{SECRET}\"\nport = 8080\n"),
    );
    let out = controller(&["--config", &path], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `port`") && err.contains(&path),
        "{err}"
    );

    let missing = dir.join("missing.toml");
    let missing = missing.to_str().expect("utf-8");
    let out = controller(&["--print-config"], &[("VDESK_CONFIG", missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));

    // A value the file sets is checked like the flag's: the message names the flag.
    let path = write(&dir, "weak.toml", "secret = \"short\"\n");
    let out = controller(&["--config", &path], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret"));
}
