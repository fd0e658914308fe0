//! The `smh-gateway` command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use smh_gateway::config::{LogConfig, LogFormat};
use smh_gateway::emulator::{Emulator, EmulatorConfig};
use smh_gateway::server::Shutdown;

/// Exit status for a configuration that does not load (sysexits'
/// EX_CONFIG), so supervisors and scripts can tell a bad file from a
/// runtime failure (1) and a command-line mistake (2, clap's).
const EXIT_BAD_CONFIG: u8 = 78;
/// Exit status for a bad command line: clap's own.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "smh-gateway",
    version = smh_gateway::build_info::LONG_VERSION,
    about = "Gateway for Tencent Cloud Smart Media Hosting: business sessions in, per-user SMH tokens out",
    after_help = "Exit status: 0 success, 1 runtime failure, 2 bad command line, 78 bad configuration.\nEvery flag can also be set through the environment variable shown with it."
)]
struct Cli {
    /// Log filter (`info`, `debug`, `smh_gateway=debug,hyper=info`); wins
    /// over RUST_LOG and the file's `log.level`.
    #[arg(long, global = true, env = "SMH_GATEWAY_LOG_LEVEL", value_parser = log_filter)]
    log_level: Option<String>,
    /// Log line format; wins over the file's `log.format`.
    #[arg(long, global = true, env = "SMH_GATEWAY_LOG_FORMAT", value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with everything on one machine: the SMH emulator,
    /// throw-away TLS, a session signing key, and a printed session + curl lines.
    Dev {
        /// A TOML fragment merged over the generated configuration (roles,
        /// CORS, session sources, limits): try your settings against the emulator.
        /// Its own variable: a production SMH_GATEWAY_CONFIG never leaks into dev.
        #[arg(long, short, env = "SMH_GATEWAY_DEV_CONFIG")]
        config: Option<PathBuf>,
        /// Gateway (client) listener.
        #[arg(long, env = "SMH_GATEWAY_DEV_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], smh_gateway::dev::DEV_PORT)))]
        listen: SocketAddr,
        /// Admin listener (/metrics, /healthz, /readyz).
        #[arg(long, env = "SMH_GATEWAY_DEV_ADMIN_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], smh_gateway::dev::DEV_ADMIN_PORT)))]
        admin_listen: SocketAddr,
        /// Emulator listener (default: any free port).
        #[arg(
            long,
            env = "SMH_GATEWAY_DEV_EMULATOR_LISTEN",
            default_value = "127.0.0.1:0"
        )]
        emulator_listen: SocketAddr,
        /// Where to write the generated config, TLS material and secrets (default: a new temp dir).
        #[arg(long, env = "SMH_GATEWAY_DEV_DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the gateway for real from a configuration file.
    Run {
        /// The TOML configuration (see config/gateway.example.toml).
        #[arg(long, short, env = "SMH_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file exactly as `run` would load it, and print
    /// a redacted summary.
    CheckConfig {
        /// The TOML configuration to check.
        #[arg(
            long,
            short,
            env = "SMH_GATEWAY_CONFIG",
            required_unless_present = "file"
        )]
        config: Option<PathBuf>,
        /// The older spelling, `check-config FILE` (kept for scripts); wins
        /// over the environment variable.
        #[arg(hide = true)]
        file: Option<PathBuf>,
    },
    /// Run the SMH + COS emulator alone (HTTPS with throw-away TLS).
    Emulator {
        /// Address to listen on.
        #[arg(long, env = "SMH_EMULATOR_LISTEN", default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        /// LibraryId the emulator serves.
        #[arg(long, env = "SMH_EMULATOR_LIBRARY_ID", default_value = smh_gateway::emulator::DEFAULT_LIBRARY_ID)]
        library_id: String,
        /// Serve a multi-tenant library with these pre-created spaces.
        #[arg(long = "space", env = "SMH_EMULATOR_SPACES", value_delimiter = ',')]
        spaces: Vec<String>,
        /// Directory for the throw-away CA certificate (default: a new temp dir).
        #[arg(long, env = "SMH_EMULATOR_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Delay every token-API answer by this many milliseconds (to show
        /// that one slow mint does not hold up other users' requests).
        #[arg(long, env = "SMH_EMULATOR_TOKEN_LATENCY_MS", default_value_t = 0)]
        token_latency_ms: u64,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line.
    Man,
}

/// Checks a `--log-level` value when the command line is read, so every
/// subcommand refuses a bad one the same way (exit 2).
fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Log settings: the command line wins over the file.
struct Logging<'a> {
    level: Option<&'a str>,
    format: Option<CliLogFormat>,
}

fn main() -> ExitCode {
    smh_gateway::tls::install_crypto_provider();
    let cli = Cli::parse();
    let logging = Logging {
        level: cli.log_level.as_deref(),
        format: cli.log_format,
    };
    match cli.command {
        Command::CheckConfig { config, file } => match file.or(config) {
            Some(path) => check_config(&path),
            None => unreachable!("clap requires one of them"),
        },
        Command::Run { config: path } => match smh_gateway::config::load(&path) {
            Ok(cfg) => {
                if let Err(e) = init_logging(&logging, &cfg.log) {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
                run_async(run(cfg, path))
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: not started (bad configuration)", path.display());
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Dev {
            config,
            listen,
            admin_listen,
            emulator_listen,
            dir,
        } => {
            if let Err(e) = init_logging(&logging, &LogConfig::default()) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            run_async(dev(smh_gateway::dev::DevOptions {
                listen,
                admin_listen,
                emulator_listen,
                dir,
                fragment: config,
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
            if let Err(e) = init_logging(&logging, &LogConfig::default()) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            run_async(emulator(
                listen,
                library_id,
                spaces,
                state_dir,
                token_latency_ms,
            ))
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "smh-gateway", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // `smh-gateway man | head` closed the pipe: not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
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

/// `--log-level` wins, then `RUST_LOG`, then the file's `log.level`.
fn init_logging(cli: &Logging<'_>, cfg: &LogConfig) -> Result<(), String> {
    let filter = match cli.level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?}: {e}"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(cfg.level.as_deref().unwrap_or("info"))
        }),
    };
    let format = match cli.format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Human) => LogFormat::Human,
        None => cfg.format,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
    Ok(())
}

async fn run(cfg: smh_gateway::config::Settings, path: PathBuf) -> anyhow::Result<()> {
    // Installed before start-up: an early SIGHUP or SIGUSR1 is then handled
    // instead of killing the process (their default action).
    let mut signals = Signals::install()?;
    let libraries: Vec<String> = cfg.libraries.iter().map(|l| l.id.clone()).collect();
    let (listen, admin) = (cfg.listener.address, cfg.admin.address);
    tracing::info!(
        version = smh_gateway::build_info::VERSION,
        commit = smh_gateway::build_info::COMMIT,
        built = smh_gateway::build_info::BUILD_DATE,
        config = %path.display(),
        libraries = %libraries.join(","),
        %listen,
        %admin,
        "smh-gateway starting"
    );
    let shutdown = Shutdown::default();
    let source = smh_gateway::app::ConfigSource {
        path,
        env: smh_gateway::config::Environment::process(),
    };
    let running = smh_gateway::app::start(cfg, Some(source), shutdown.clone()).await?;
    tracing::info!(addr = %running.addr, admin_addr = %running.admin_addr, "smh-gateway listening");
    loop {
        match signals.next().await {
            Event::Stop => break,
            Event::ReopenAudit => running.reopen_audit(),
            // A reload may wait seconds on a JWKS URL: a stop meanwhile
            // abandons it (nothing is swapped before it completes).
            Event::Reload => tokio::select! {
                _ = running.reload() => {}
                _ = signals.stop() => break,
            },
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.stop().await;
    Ok(())
}

async fn dev(opts: smh_gateway::dev::DevOptions) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let env = smh_gateway::dev::start(opts).await?;
    println!("{}", env.banner());
    loop {
        match signals.next().await {
            Event::Stop => break,
            Event::ReopenAudit => env.running.reopen_audit(),
            // Re-reads the generated gateway.toml (edit it, then SIGHUP).
            Event::Reload => tokio::select! {
                _ = env.running.reload() => {}
                _ = signals.stop() => break,
            },
        }
    }
    // Interactive: Ctrl-C stops at once, no lame duck.
    env.running.stop_with(std::time::Duration::ZERO).await;
    env.emulator.shutdown();
    Ok(())
}

/// What a signal asks for.
enum Event {
    /// SIGTERM (orchestrators) or SIGINT (Ctrl-C): a graceful drain.
    Stop,
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGUSR1: reopen the audit file (logrotate's move-then-signal).
    ReopenAudit,
}

/// The process's signal streams, installed once: a signal that arrives
/// while another is being handled waits in its stream instead of being lost.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop,
            _ = self.int.recv() => Event::Stop,
            _ = self.hup.recv() => Event::Reload,
            _ = self.usr1.recv() => Event::ReopenAudit,
        }
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self)
    }
    async fn next(&mut self) -> Event {
        let _ = tokio::signal::ctrl_c().await;
        Event::Stop
    }
    async fn stop(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match smh_gateway::config::load(file) {
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
            ExitCode::from(EXIT_BAD_CONFIG)
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
    let mut signals = Signals::install()?;
    signals.stop().await;
    emu.shutdown();
    Ok(())
}
