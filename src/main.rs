//! The `smh-gateway` command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use smh_gateway::config::{Config, LogConfig, LogFormat};
use smh_gateway::emulator::{Emulator, EmulatorConfig};
use smh_gateway::server::Shutdown;

#[derive(Parser)]
#[command(
    name = "smh-gateway",
    version,
    about = "Gateway for Tencent Cloud Smart Media Hosting: business sessions in, per-user SMH tokens out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with everything on one machine: the SMH emulator,
    /// throw-away TLS, a session signing key, and a printed session + curl lines.
    Dev {
        /// Gateway (client) listener.
        #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], smh_gateway::dev::DEV_PORT)))]
        listen: SocketAddr,
        /// Admin listener (/metrics, /healthz, /readyz).
        #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], smh_gateway::dev::DEV_ADMIN_PORT)))]
        admin_listen: SocketAddr,
        /// Emulator listener (default: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        emulator_listen: SocketAddr,
        /// Where to write the generated config, TLS material and secrets (default: a new temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the gateway for real from a configuration file.
    Run {
        /// The TOML configuration (see config/gateway.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print a redacted summary.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Run the SMH + COS emulator alone (HTTPS with throw-away TLS).
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        /// LibraryId the emulator serves.
        #[arg(long, default_value = smh_gateway::emulator::DEFAULT_LIBRARY_ID)]
        library_id: String,
        /// Serve a multi-tenant library with these pre-created spaces.
        #[arg(long = "space")]
        spaces: Vec<String>,
        /// Directory for the throw-away CA certificate (default: a new temp dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Delay every token-API answer by this many milliseconds (to show
        /// that one slow mint does not hold up other users' requests).
        #[arg(long, default_value_t = 0)]
        token_latency_ms: u64,
    },
}

fn main() -> ExitCode {
    smh_gateway::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config: path } => match Config::load(&path) {
            Ok(cfg) => {
                init_logging_from(&cfg.log);
                run_async(run(cfg, path))
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Dev {
            listen,
            admin_listen,
            emulator_listen,
            dir,
        } => {
            init_logging();
            run_async(dev(smh_gateway::dev::DevOptions {
                listen,
                admin_listen,
                emulator_listen,
                dir,
                ..Default::default()
            }))
        }
        Command::Emulator {
            listen,
            library_id,
            spaces,
            state_dir,
            token_latency_ms,
        } => {
            init_logging();
            run_async(emulator(
                listen,
                library_id,
                spaces,
                state_dir,
                token_latency_ms,
            ))
        }
    }
}

/// Whether the runtime gets one worker thread (`TOKIO_WORKER_THREADS=1`, or
/// a one-CPU machine). Then the current-thread scheduler does the same job
/// as a one-worker multi-thread runtime without its cross-thread machinery
/// (work-stealing queues, atomics on every wake-up).
fn single_worker() -> bool {
    match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(v) => v.trim() == "1",
        Err(_) => std::thread::available_parallelism().is_ok_and(|n| n.get() == 1),
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = if single_worker() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    init_logging_from(&LogConfig::default());
}

/// `RUST_LOG` wins over the config's level, so operators can turn up
/// logging without editing the file.
fn init_logging_from(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(cfg.level.as_deref().unwrap_or("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

async fn run(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    // Installed before start-up so an early SIGHUP reloads instead of
    // killing the process (the default action).
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // SIGUSR1 reopens the audit file (logrotate's move-then-signal).
    #[cfg(unix)]
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let shutdown = Shutdown::default();
    let running = smh_gateway::app::start(&cfg, shutdown.clone()).await?;
    #[cfg(unix)]
    {
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = running.reload(&path); }
                _ = usr1.recv() => running.reopen_audit(),
                _ = wait_for_signal() => break,
            }
        }
    }
    #[cfg(not(unix))]
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.stop().await;
    Ok(())
}

async fn dev(opts: smh_gateway::dev::DevOptions) -> anyhow::Result<()> {
    let env = smh_gateway::dev::start(opts).await?;
    println!("{}", env.banner());
    wait_for_signal().await;
    // Interactive: Ctrl-C stops at once, no lame duck.
    env.running.stop_with(std::time::Duration::ZERO).await;
    env.emulator.shutdown();
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (orchestrators) start a graceful drain.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(cfg) => {
            println!("{}: OK", file.display());
            print!("{}", cfg.redacted_summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s); not usable",
                file.display(),
                errors.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

async fn emulator(
    listen: SocketAddr,
    library_id: String,
    spaces: Vec<String>,
    state_dir: Option<PathBuf>,
    token_latency_ms: u64,
) -> anyhow::Result<()> {
    let config = EmulatorConfig {
        library_id,
        multi_tenant: !spaces.is_empty(),
        spaces,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(config, listen).await?;
    if token_latency_ms > 0 {
        emu.hooks()
            .set_token_api_latency(std::time::Duration::from_millis(token_latency_ms));
    }
    let dir = match state_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("smh-emulator-{}", emu.addr().port())),
    };
    std::fs::create_dir_all(&dir)?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem())?;
    let base = emu.base_url();
    let lib = emu.library_id();
    let secret = emu.library_secret();
    println!("SMH emulator listening on {base}");
    println!("  CA certificate: {}", ca.display());
    println!("  LibraryId:      {lib}");
    println!("  LibrarySecret:  {secret}");
    println!();
    println!("Try it:");
    println!(
        "  export CA={} BASE={base} LIB={lib} SECRET={secret}",
        ca.display()
    );
    println!("  TOKEN=$(curl -s --cacert $CA \"$BASE/api/v1/token?library_id=$LIB&library_secret=$SECRET&user_id=alice&grant=admin\" | sed 's/.*\"accessToken\":\"\\([^\"]*\\)\".*/\\1/')");
    println!("  curl -s --cacert $CA -X PUT \"$BASE/api/v1/directory/$LIB/-/photos?access_token=$TOKEN\"");
    println!("  curl -s --cacert $CA \"$BASE/api/v1/directory/$LIB/-/photos?by-marker&access_token=$TOKEN\"");
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await;
    emu.shutdown();
    Ok(())
}
