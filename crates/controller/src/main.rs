//! `vdesk-controller`: parse the flags over the config file (or print them with
//! `--print-config`), check the configuration, start logging, serve until SIGINT or
//! SIGTERM, then let sessions end cleanly (at most [`GRACE`]); or run an operator subcommand
//! (`agent-secret`, `mint-link`) and print its result, or check the deployment (`doctor`). The composition root only; all behaviour
//! lives in the library.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};
use vdesk_controller::{cli, doctor, serve, viewer_token, AppState, Args, Config};

/// Read when no --config (or VDESK_CONFIG) names another file, if it exists.
const DEFAULT_CONFIG: &str = "/etc/vdesk/controller.toml";

/// How long open connections may take to close after the shutdown signal.
const GRACE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = match vdesk_config_file::parse::<Args>(
        std::env::args_os(),
        std::path::Path::new(DEFAULT_CONFIG),
    ) {
        Ok(l) => l,
        Err(e) => {
            // `doctor` reports an unreadable config file as its failing check.
            if std::env::args().skip(1).any(|a| a == "doctor") {
                let report = doctor::unreadable_config(&e.to_string());
                let json = std::env::args().any(|a| a == "--json");
                print!(
                    "{}",
                    if json {
                        report.json() + "\n"
                    } else {
                        report.text()
                    }
                );
                std::process::exit(i32::from(report.exit_code()));
            }
            eprintln!("vdesk-controller: {e}");
            std::process::exit(2);
        }
    };
    if loaded.args.print_config {
        print!("{}", loaded.render());
        return Ok(());
    }
    let args = loaded.args;
    if let Some(cli::Command::Doctor { json }) = &args.command {
        let report = doctor::run(&args, viewer_token::unix_now()).await;
        print!(
            "{}",
            if *json {
                report.json() + "\n"
            } else {
                report.text()
            }
        );
        std::process::exit(i32::from(report.exit_code()));
    }
    if let Some(cmd) = &args.command {
        match cli::run(cmd, viewer_token::unix_now()) {
            Ok(out) => {
                println!("{out}");
                return Ok(());
            }
            Err(e) => {
                eprintln!("vdesk-controller: {e}");
                std::process::exit(2);
            }
        }
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vdesk-controller: {e}");
            std::process::exit(2);
        }
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    // At trace level these log whole WebSocket frames, an agent's hello (and its secret) too.
    for quiet in ["tungstenite=debug", "tokio_tungstenite=debug"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let addr = listener.local_addr()?;
    let vms: Vec<&str> = config.vms.iter().map(|v| v.as_str()).collect();
    info!(
        %addr,
        tls = config.tls.is_some(),
        vms = %vms.join(","),
        ice_servers = config.ice_servers.len(),
        turn_rest = config.turn.is_some(),
        admin_api = config.admin_token.is_some(),
        shared_agent_token = config.agent_token.is_some(),
        idle_timeout_s = config.session_idle_timeout.as_secs(),
        "vdesk controller listening; mint viewer links with `vdesk-controller mint-link --vm ID`"
    );

    let cluster_url = config.cluster.as_ref().map(|u| u.0.clone());
    let state = AppState::new(config);
    if let Some(url) = cluster_url {
        state
            .join_cluster(&url)
            .await
            .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        info!(
            node = state.cluster().map_or("", |c| c.node()),
            "cluster node: shared state in NATS"
        );
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    tokio::select! {
        result = &mut server => return Ok(result??),
        () = shutdown_signal() => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(GRACE, server).await {
        Ok(result) => result??,
        Err(_) => warn!(
            "connections still open {} s after shutdown; exiting anyway",
            GRACE.as_secs()
        ),
    }
    info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
