//! The `oxidex` command: `serve`, `check-config`, `backup`, `version`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use oxidex::config::{self, LoadOptions, Loaded, Overrides};
use oxidex::{server, shutdown};

#[derive(Parser)]
#[command(name = "oxidex", version = oxidex::VERSION, about = "A Dex-compatible OpenID Connect identity provider")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server with a Dex-style config file (JSON or YAML).
    Serve(ServeArgs),
    /// Validate a config file and print the effective config, secrets redacted.
    CheckConfig(CheckArgs),
    /// Copy the SQLite database named by a config file to a new file, consistently,
    /// while oxidex keeps running.
    Backup(BackupArgs),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct BackupArgs {
    /// Path to the config file (its `storage` must be `sqlite3`).
    config: PathBuf,
    /// The backup file to create (must not exist).
    dest: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Path to the config file.
    config: PathBuf,
    /// Overrides `web.http`.
    #[arg(long)]
    web_http_addr: Option<String>,
    /// Overrides `web.https`.
    #[arg(long)]
    web_https_addr: Option<String>,
    /// Overrides `telemetry.http`.
    #[arg(long)]
    telemetry_addr: Option<String>,
    /// Treat unknown config keys as errors.
    #[arg(long)]
    strict: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Path to the config file.
    config: PathBuf,
    /// Treat unknown config keys as errors.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => print_stdout(&format!("oxidex {}", oxidex::VERSION)),
        Command::CheckConfig(args) => check_config(args),
        Command::Backup(args) => backup(args),
        Command::Serve(args) => serve(args, started),
    }
}

fn load(path: &std::path::Path, strict: bool, overrides: Overrides) -> Result<Loaded, ExitCode> {
    let options = LoadOptions {
        strict,
        overrides,
        ..LoadOptions::default()
    };
    match config::load_file(path, &options) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(loaded)
        }
        Err(error) => {
            eprintln!("invalid config {}:\n{error}", path.display());
            Err(ExitCode::from(2))
        }
    }
}

fn check_config(args: CheckArgs) -> ExitCode {
    let loaded = match load(&args.config, args.strict, Overrides::default()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    // Connector configs (clientID, redirectURI, rootCA files…) and templates,
    // checked offline as a reload checks them: their problems show here, not at
    // the first login.
    let mut problems = server::prepare(&loaded.settings, server::system_clock())
        .err()
        .unwrap_or_default();
    for loaded_tls in [
        server::load_tls(&loaded.settings),
        server::load_grpc_tls(&loaded.settings),
    ] {
        if let Err(problem) = loaded_tls {
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        eprintln!("invalid config {}:", args.config.display());
        for problem in problems {
            eprintln!("  {problem}");
        }
        return ExitCode::from(2);
    }
    match serde_json::to_string_pretty(&config::redacted_json(&loaded.settings)) {
        Ok(text) => {
            let printed = print_stdout(&text);
            eprintln!("config {} is valid", args.config.display());
            if printed != ExitCode::SUCCESS {
                return printed;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot print the effective config: {error}");
            ExitCode::FAILURE
        }
    }
}

fn backup(args: BackupArgs) -> ExitCode {
    let loaded = match load(&args.config, false, Overrides::default()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let config::StorageSettings::Sqlite3 { file } = &loaded.settings.storage else {
        eprintln!("oxidex backup: storage is not sqlite3; nothing to copy");
        return ExitCode::from(2);
    };
    match oxidex::storage::sqlite::backup(file, &args.dest) {
        Ok(()) => {
            eprintln!("backed up {} to {}", file.display(), args.dest.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("oxidex backup: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs, started: Instant) -> ExitCode {
    let overrides = Overrides {
        web_http: args.web_http_addr,
        web_https: args.web_https_addr,
        telemetry_http: args.telemetry_addr,
    };
    let reload = ReloadSource {
        options: LoadOptions {
            strict: args.strict,
            overrides: overrides.clone(),
            ..LoadOptions::default()
        },
        path: args.config.clone(),
    };
    let loaded = match load(&args.config, args.strict, overrides) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Err(error) = oxidex::telemetry::init_logging(&loaded.settings.logger) {
        eprintln!("{error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_async(loaded, reload, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("oxidex: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(loaded: Loaded, reload: ReloadSource, started: Instant) -> Result<(), String> {
    let settings = loaded.settings;
    let tls = server::load_tls(&settings)?;
    let grpc_tls = server::load_grpc_tls(&settings)?;
    let http = match &settings.web.http {
        Some(addr) => Some(
            oxidex::listen::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on web.http {addr}: {e}"))?,
        ),
        None => None,
    };
    let https = match (&settings.web.https, tls) {
        (Some(addr), Some(tls)) => Some(server::HttpsListener {
            tcp: oxidex::listen::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on web.https {addr}: {e}"))?,
            tls,
            reload_interval: server::TLS_RELOAD_INTERVAL,
        }),
        _ => None,
    };
    let telemetry = match &settings.telemetry_http {
        Some(addr) => Some(
            oxidex::listen::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on telemetry.http {addr}: {e}"))?,
        ),
        None => None,
    };
    let grpc = match &settings.grpc {
        Some(grpc) => Some(server::GrpcListener {
            tcp: oxidex::listen::bind(&grpc.addr)
                .await
                .map_err(|e| format!("cannot listen on grpc.addr {}: {e}", grpc.addr))?,
            tls: grpc_tls,
        }),
        None => None,
    };
    let (trigger, stop) = shutdown::channel();
    let services = server::start_services(settings, server::system_clock(), stop.clone())
        .await
        .map_err(|e| e.to_string())?;
    for (scheme, listener) in [
        ("http", http.as_ref()),
        ("https", https.as_ref().map(|l| &l.tcp)),
    ] {
        if let Some(Ok(addr)) = listener.map(|l| l.local_addr()) {
            tracing::info!(
                address = %addr,
                scheme,
                issuer = %services.state.settings.issuer.url,
                ready_after_ms = started.elapsed().as_millis() as u64,
                "listening"
            );
        }
    }
    if let Some(Ok(addr)) = telemetry.as_ref().map(|t| t.local_addr()) {
        tracing::info!(address = %addr, "telemetry listening");
    }
    if let Some(Ok(addr)) = grpc.as_ref().map(|t| t.tcp.local_addr()) {
        tracing::info!(address = %addr, "gRPC API listening");
    }
    tokio::spawn(async move {
        shutdown::os_signal().await;
        trigger.fire();
    });
    tokio::spawn(reload_on_sighup(services.state.clone(), reload));
    let listeners = server::Listeners {
        http,
        https,
        telemetry,
        grpc,
    };
    server::serve(services, listeners, stop)
        .await
        .map_err(|e| e.to_string())
}

/// Where a reload reads the configuration from: the file and options `serve`
/// started with.
struct ReloadSource {
    path: PathBuf,
    options: LoadOptions,
}

/// Re-reads the configuration on every SIGHUP and applies it
/// ([`server::reload`]); a refused one is logged with every problem and the
/// running configuration stays.
async fn reload_on_sighup(state: oxidex::http::AppState, source: ReloadSource) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; configuration reload is off");
                return;
            }
        };
        let source = std::sync::Arc::new(source);
        while hangups.recv().await.is_some() {
            let read = source.clone();
            let loaded =
                oxidex::blocking::run(move || config::load_file(&read.path, &read.options)).await;
            let config = source.path.display();
            match loaded {
                Ok(Ok(loaded)) => {
                    for warning in &loaded.warnings {
                        tracing::warn!(%config, "{warning}");
                    }
                    match server::reload(&state, loaded.settings) {
                        Ok(()) => tracing::info!(%config, "configuration reloaded"),
                        Err(error) => tracing::error!(
                            %config,
                            "configuration reload refused, the running configuration stays: {error}"
                        ),
                    }
                }
                Ok(Err(error)) => tracing::error!(
                    %config,
                    "configuration reload refused, the running configuration stays: invalid config:\n{error}"
                ),
                Err(error) => tracing::error!(%error, "configuration reload failed"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, source);
    }
}

/// Prints `text` and a newline. A reader that has gone away (`oxidex check-config … | head`)
/// ends the output quietly instead of panicking like `println!`.
fn print_stdout(text: &str) -> ExitCode {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}
