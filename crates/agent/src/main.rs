//! `vdesk-agent`: the composition root. Parse the flags over the config file (or print them
//! with `--print-config`), check the configuration, check the GStreamer
//! plugins, choose the encoders, build the agent's context (encoder choices, metrics, stage
//! times) and what the sessions share (the media, the control room), then hand over to the
//! signalling loop until Ctrl-C or SIGTERM. Or `doctor`: check the set-up and exit.

use std::process::ExitCode;

use tracing::{error, info};
use vdesk_agent::config::{Args, Config};
use vdesk_agent::context::AgentContext;
use vdesk_agent::{doctor, encoder, metrics, pipeline, signalling};

/// Read when no --config (or VDESK_CONFIG) names another file, if it exists.
const DEFAULT_CONFIG: &str = "/etc/vdesk/agent.toml";

#[tokio::main]
async fn main() -> ExitCode {
    // The uptime the controller's admin page shows counts from here.
    vdesk_agent::thumbnail::started_at_ms();
    let loaded = match vdesk_config_file::parse::<Args>(
        std::env::args_os(),
        std::path::Path::new(DEFAULT_CONFIG),
    ) {
        Ok(l) => l,
        Err(e) => {
            // `doctor` reports an unreadable config file as its failing check.
            if std::env::args().skip(1).any(|a| a == "doctor") {
                let report = doctor::unreadable_config(&e.to_string());
                doctor::print_report(&report, std::env::args().any(|a| a == "--json"));
                return ExitCode::from(report.exit_code());
            }
            eprintln!("vdesk-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if loaded.args.print_config {
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    if let Some(doctor::Command::Doctor { json }) = loaded.args.command {
        return ExitCode::from(doctor::main(&loaded.args, json).await);
    }
    let args = loaded.args;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let config = match Config::from_args(&args, std::env::var("DISPLAY").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vdesk-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = pipeline::check_plugins(&config.codecs) {
        eprintln!("vdesk-agent: {e}");
        return ExitCode::from(2);
    }
    // One log line per codec: which encoder it uses and why.
    // The agent's context: built here once, passed down to everything below.
    let context = match encoder::select(
        &config.encoder,
        &config.codecs,
        &encoder::HARDWARE_H264,
        &mut encoder::probe,
    ) {
        Ok(choices) => AgentContext::new(choices),
        Err(e) => {
            eprintln!("vdesk-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let warm = pipeline::warm_up(&config.codecs);
    info!(
        "plugins loaded and DTLS certificate ready in {} ms",
        warm.as_millis()
    );
    info!(vm = %config.vm_id, display = %config.media.display, controller = %config.ws_url,
          codecs = ?config.codecs, "vdesk-agent {} starting", env!("CARGO_PKG_VERSION"));
    let _metrics = match config.metrics_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(tokio::spawn(metrics::serve(
                listener,
                context.metrics.clone(),
                config.vm_id.to_string(),
            ))),
            Err(e) => {
                eprintln!("vdesk-agent: --metrics-listen {addr}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // What every session shares: the media (one capture and encoder per stream) and the room.
    let shared = signalling::Shared::new(&config, context);
    match signalling::run_with(config, shared, shutdown_signal()).await {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
