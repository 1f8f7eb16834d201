//! oxidex-bench: measures a release build of oxidex against the machine's ceilings and its
//! peers, in one run, and prints one Markdown table. It builds nothing: see `bench/run.sh`.
//!
//!   oxidex-bench --oxidex PATH --hello PATH [--signing-hello PATH] [--layered-hello PATH]
//!                [--oidc-provider DIR] [--dex PATH] [--secs 5] [--out FILE] [--storage-only]
//!   oxidex-bench --oxidex PATH --soak SECS [--out FILE]
//!
//! With `OXIDEX_BENCH_POSTGRES="host=H port=P user=U password=W"` (a role owning the empty
//! databases `oxidex` and `dex`), oxidex and Dex also run on PostgreSQL: the storage table.
//! `--storage-only` measures only that table's rows (code exchange, refresh, login flows).
//! `--soak SECS`: the mixed workload of `soak.rs` for SECS; fails (exit 1) on any request
//! error or RSS growth after minute one beyond its tolerance, and writes a plot next to
//! `--out` (`.svg`).
//!
//! GETs are driven by wrk (-t2 -c64, keep-alive); POSTs and login flows by the Rust loop
//! in `load.rs` (tokio + hyper, one keep-alive connection per worker). Every loop stops at
//! its time window or its operation budget, whichever comes first.

mod ceiling;
mod http;
mod load;
mod procs;
mod soak;
mod table;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use load::{CodeQueue, FlowState, LoadResult, RefreshChain, Target, closed_loop, flow_states};
use procs::{Server, free_addr, wrk};
use serde_json::json;

use crate::http::Error;
use crate::table::{Measured, Report, SystemResult};

struct Args {
    oxidex: PathBuf,
    hello: PathBuf,
    signing_hello: Option<PathBuf>,
    layered_hello: Option<PathBuf>,
    node_peer: Option<PathBuf>,
    dex: Option<PathBuf>,
    secs: f64,
    out: Option<PathBuf>,
    storage_only: bool,
    postgres: Option<Postgres>,
    soak: Option<f64>,
    /// The hello server, kept running so that every provider's GETs are
    /// compared with a hello measured just before them, under the same
    /// conditions (a 2-core VM drifts by ±20% over a run).
    hello_addr: Option<std::net::SocketAddr>,
    /// The layered hello, kept running like hello: oxidex's GETs are also
    /// compared with it, measured just before them.
    layered_hello_addr: Option<std::net::SocketAddr>,
}

/// Where the throwaway PostgreSQL cluster of `bench/run.sh` listens.
#[derive(Default)]
struct Postgres {
    host: String,
    port: u16,
    user: String,
    password: String,
}

impl Postgres {
    /// `host=H port=P user=U password=W` (libpq keyword style; values without spaces).
    fn parse(text: &str) -> Result<Self, Error> {
        let mut pg = Postgres::default();
        for pair in text.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("OXIDEX_BENCH_POSTGRES: {pair:?} is not key=value"))?;
            match key {
                "host" => pg.host = value.to_owned(),
                "port" => pg.port = value.parse()?,
                "user" => pg.user = value.to_owned(),
                "password" => pg.password = value.to_owned(),
                other => return Err(format!("OXIDEX_BENCH_POSTGRES: unknown key {other}").into()),
            }
        }
        if pg.host.is_empty() || pg.port == 0 || pg.user.is_empty() {
            return Err("OXIDEX_BENCH_POSTGRES needs host, port and user".into());
        }
        Ok(pg)
    }

    /// Dex's `storage` block, which oxidex reads too. Both pools get Dex's default size
    /// (5 open, 5 idle), spelled out so the two stay equal.
    fn storage(&self, database: &str) -> serde_json::Value {
        json!({"type": "postgres", "config": {
            "host": self.host,
            "port": self.port,
            "database": database,
            "user": self.user,
            "password": self.password,
            "ssl": {"mode": "disable"},
            "maxOpenConns": 5,
            "maxIdleConns": 5
        }})
    }
}

fn args() -> Result<Args, Error> {
    let mut args = Args {
        oxidex: PathBuf::new(),
        hello: PathBuf::new(),
        signing_hello: None,
        layered_hello: None,
        node_peer: None,
        dex: None,
        secs: 5.0,
        out: None,
        storage_only: false,
        postgres: None,
        soak: None,
        hello_addr: None,
        layered_hello_addr: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--oxidex" => args.oxidex = value()?.into(),
            "--hello" => args.hello = value()?.into(),
            "--signing-hello" => args.signing_hello = Some(value()?.into()),
            "--layered-hello" => args.layered_hello = Some(value()?.into()),
            "--oidc-provider" => args.node_peer = Some(value()?.into()),
            "--dex" => args.dex = Some(value()?.into()),
            "--secs" => args.secs = value()?.parse()?,
            "--out" => args.out = Some(value()?.into()),
            "--storage-only" => args.storage_only = true,
            "--soak" => args.soak = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: oxidex-bench --oxidex PATH --hello PATH [--signing-hello PATH] [--layered-hello PATH] [--oidc-provider DIR] [--dex PATH] [--secs 5] [--out FILE] [--storage-only]\n\
                     \x20      oxidex-bench --oxidex PATH --soak SECS [--out FILE]\n\
                     env OXIDEX_BENCH_POSTGRES=\"host=H port=P user=U password=W\": also oxidex and Dex on PostgreSQL \
                     (databases `oxidex` and `dex`, empty)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)").into()),
        }
    }
    if args.soak.is_some() && !args.oxidex.as_os_str().is_empty() {
        return Ok(args);
    }
    if args.oxidex.as_os_str().is_empty() || args.hello.as_os_str().is_empty() {
        return Err("--oxidex and --hello are required (see --help)".into());
    }
    if let Ok(text) = std::env::var("OXIDEX_BENCH_POSTGRES") {
        args.postgres = Some(Postgres::parse(&text)?);
    }
    if args.storage_only && args.postgres.is_none() {
        return Err("--storage-only needs OXIDEX_BENCH_POSTGRES (see --help)".into());
    }
    Ok(args)
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxidex-bench: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("oxidex-bench: {e}");
        std::process::exit(1);
    }
}

fn progress(message: &str) {
    eprintln!("[bench] {message}");
}

async fn run() -> Result<(), Error> {
    let mut args = args()?;
    let window = Duration::from_secs_f64(args.secs);
    let work = std::env::temp_dir().join(format!("oxidex-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    if let Some(secs) = args.soak {
        let report = soak::run(&args.oxidex, &work, secs, context(&args)).await;
        let _ = std::fs::remove_dir_all(&work);
        let report = report?;
        let markdown = report.markdown();
        println!("{markdown}");
        if let Some(out) = &args.out {
            std::fs::write(out, &markdown)?;
            progress(&format!("wrote {}", out.display()));
            let svg = out.with_extension("svg");
            std::fs::write(&svg, report.svg())?;
            progress(&format!("wrote {}", svg.display()));
        }
        return match report.failures().as_slice() {
            [] => Ok(()),
            failures => Err(format!("soak failed: {}", failures.join("; ")).into()),
        };
    }
    let mut report = Report::new(args.secs);
    report.storage_only = args.storage_only;
    report.context = context(&args);

    progress("signature ceilings");
    report.ceilings = Some(tokio::task::spawn_blocking(move || ceiling::measure(window)).await??);

    let mut hello_server = None;
    let mut layered_hello_server = None;
    if !args.storage_only {
        progress("hello");
        let addr = free_addr()?;
        let mut cmd = Command::new(&args.hello);
        cmd.arg(addr.to_string());
        let hello = Server::start("hello", cmd, addr, "/", &work.join("hello.log")).await?;
        report.hello_wrk = Some(wrk(&format!("http://{addr}/"), args.secs).await?);
        let states = (0..64).map(|_| "/".to_owned()).collect();
        let r = closed_loop(addr, states, window, u64::MAX, load::get_path).await;
        report.hello_loop = Some(Measured::from(&r));
        report.hello_rss = hello.rss_mb();
        args.hello_addr = Some(addr);
        hello_server = Some(hello);
        if let Some(path) = &args.layered_hello {
            progress("layered hello");
            let addr = free_addr()?;
            let mut cmd = Command::new(path);
            cmd.arg(addr.to_string());
            let log = work.join("layered-hello.log");
            let layered = Server::start("layered hello", cmd, addr, "/", &log).await?;
            report.layered_hello_wrk = Some(wrk(&format!("http://{addr}/"), args.secs).await?);
            args.layered_hello_addr = Some(addr);
            layered_hello_server = Some(layered);
        }
        if let Some(path) = &args.signing_hello {
            for (slot, algorithm) in ["RS256", "ES256"].into_iter().enumerate() {
                progress(&format!("signing hello ({algorithm})"));
                match signing_hello(path, algorithm, &work, window).await {
                    Ok((measured, bytes)) => {
                        report.signing_hello[slot] = Some(measured);
                        report.signing_hello_bytes[slot] = Some(bytes);
                    }
                    Err(e) => report
                        .oxidex
                        .errors
                        .push(format!("signing hello ({algorithm}): {e}")),
                }
            }
        }
    }

    let two_sig = report
        .ceilings
        .as_ref()
        .map_or(1000.0, |c| c.rs256[1] / 2.0);
    let two_sig_es = report
        .ceilings
        .as_ref()
        .map_or(10_000.0, |c| c.es256[1] / 2.0);

    let gets = !args.storage_only;
    progress("oxidex (RS256)");
    let sqlite =
        |dir: &Path, file: &str| json!({"type": "sqlite3", "config": {"file": dir.join(file)}});
    let dir = work.join("oxidex-RS256");
    report.oxidex = oxidex(
        &args,
        &dir,
        sqlite(&dir, "oxidex.db"),
        "RS256",
        two_sig,
        gets,
    )
    .await;
    if !args.storage_only {
        progress("oxidex (ES256)");
        let dir = work.join("oxidex-ES256");
        let es = oxidex(
            &args,
            &dir,
            sqlite(&dir, "oxidex.db"),
            "ES256",
            two_sig_es,
            false,
        )
        .await;
        report.oxidex.token_es256 = es.token;
        report.oxidex.token_es256_bytes = es.token_bytes;
        report.oxidex_es256_flows = es.flows;
        report.oxidex.errors.extend(
            es.errors
                .into_iter()
                .map(|e| format!("ES256 instance: {e}")),
        );
    }
    if !args.storage_only {
        // At ~0.1 s per check, a short window holds too few checks for a stable rate.
        let slow = window.max(PASSWORD_WINDOW);
        progress("bcrypt ceiling");
        let hash = ceiling::password_hash()?;
        report.bcrypt_ceiling =
            Some(tokio::task::spawn_blocking(move || ceiling::bcrypt_rate(slow, &hash)).await?);
        progress("oxidex (RS256) with the password DB");
        report.oxidex_password = Some(oxidex_password(&args, &work.join("oxidex-password")).await);
    }
    if let Some(pg) = &args.postgres {
        progress("oxidex on PostgreSQL (RS256)");
        let dir = work.join("oxidex-postgres");
        report.oxidex_pg =
            Some(oxidex(&args, &dir, pg.storage("oxidex"), "RS256", two_sig, false).await);
    }

    if let Some(dir) = &args.node_peer
        && !args.storage_only
    {
        progress("oidc-provider");
        report.node = Some(node_peer(dir, &work, &args, two_sig).await);
    }
    if let Some(dex) = &args.dex {
        progress("Dex");
        let dir = work.join("dex");
        let storage = sqlite(&dir, "dex.db");
        report.dex = Some(dex_peer(dex, &dir, storage, &args, two_sig, gets).await);
        if let Some(pg) = &args.postgres {
            progress("Dex on PostgreSQL");
            let dir = work.join("dex-postgres");
            let storage = pg.storage("dex");
            report.dex_pg = Some(dex_peer(dex, &dir, storage, &args, two_sig, false).await);
        }
    }

    drop(hello_server);
    drop(layered_hello_server);
    let markdown = report.render();
    println!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown)?;
        progress(&format!("wrote {}", out.display()));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Where and with what the figures were taken, as the lines above the table.
fn context(args: &Args) -> Vec<String> {
    let first_line = |program: &Path, arg: &str| -> String {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "?".into())
    };
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".into(), |(_, v)| v.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = read("/proc/sys/kernel/hostname").trim().to_owned();
    let date = first_line(Path::new("date"), "-u");
    let mut lines = vec![
        format!(
            "Run {date} on `{host}`: {cores} × {cpu}, load average at start {}.",
            read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        format!(
            "{} (release build `{}`), commit {}; hello = `examples/hello.rs`; load generators: {} for GETs, the Rust loop in `bench/src/load.rs` for POSTs and flows.",
            first_line(&args.oxidex, "version"),
            // Only the file name: the table is committed, this machine's paths are not.
            args.oxidex
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::env::var("BENCH_COMMIT").unwrap_or_else(|_| "?".into()),
            first_line(Path::new("wrk"), "-v")
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    if args.node_peer.is_some() {
        lines.push(format!(
            "oidc-provider 9.13.3 on node {} (`bench/peers/oidc-provider/`).",
            first_line(Path::new("node"), "--version")
        ));
    }
    if let Some(dex) = &args.dex {
        lines.push(format!(
            "Dex: {} (`bench/peers/build-dex.sh`).",
            first_line(dex, "version")
        ));
    }
    lines.push(
        "Every provider: SQLite storage (oidc-provider: in memory), one static client, the mock connector \
         (oidc-provider: devInteractions, any password), approval screen skipped (`skipApprovalScreen: true`; \
         oidc-provider grants consent in `loadExistingGrant`), PKCE S256, scopes `openid email profile offline_access`."
            .into(),
    );
    if args.postgres.is_some() {
        lines.push(format!(
            "PostgreSQL columns: {} (a throwaway cluster of `bench/run.sh` on 127.0.0.1, TCP, scram-sha-256, no TLS), \
             an empty database per provider, each pool 5 connections (Dex's default).",
            std::env::var("BENCH_POSTGRES_VERSION").unwrap_or_else(|_| "PostgreSQL".into())
        ));
    }
    lines
}

/// The signing hello with `algorithm` under the `/token` row's load: 64 workers posting a
/// code exchange. Returns its rate and the size of its response body.
async fn signing_hello(
    path: &Path,
    algorithm: &str,
    work: &Path,
    window: Duration,
) -> Result<(Measured, usize), Error> {
    let addr = free_addr()?;
    let mut cmd = Command::new(path);
    cmd.arg(addr.to_string()).arg(algorithm);
    let log = work.join(format!("signing-hello-{algorithm}.log"));
    let server = Server::start("signing hello", cmd, addr, "/", &log).await?;
    let target = Arc::new(Target::new(addr, "", "/auth", "/token"));
    let bytes = load::exchange_code(&mut crate::http::Conn::new(addr), &target, "check")
        .await?
        .bytes;
    let states = (0..64).map(|_| target.clone()).collect();
    let cpu = server.cpu_secs();
    let r = closed_loop(addr, states, window, u64::MAX, load::signing_hello_token).await;
    let cpu = server.cpu_secs() - cpu;
    server.stop();
    if r.errors > 0 {
        return Err(format!(
            "{} errors, first: {}",
            r.errors,
            r.first_error.unwrap_or_default()
        )
        .into());
    }
    Ok((Measured::with_cpu(&r, cpu), bytes))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), Error> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
    Ok(())
}

/// Dex keeps one refresh token per user and client (a new login revokes the previous one),
/// and the mock connector always logs in the same user: the refresh measurement runs one
/// chain per client, `refresh-0` … `refresh-63`.
const REFRESH_CLIENTS: usize = 64;

fn static_clients() -> serde_json::Value {
    let mut clients = vec![json!({
        "id": "example-app",
        "name": "Example App",
        "secret": "ZXhhbXBsZS1hcHAtc2VjcmV0",
        "redirectURIs": ["http://127.0.0.1:5555/callback"]
    })];
    for i in 0..REFRESH_CLIENTS {
        clients.push(json!({
            "id": format!("refresh-{i}"),
            "name": format!("Refresh {i}"),
            "secret": "ZXhhbXBsZS1hcHAtc2VjcmV0",
            "redirectURIs": ["http://127.0.0.1:5555/callback"]
        }));
    }
    serde_json::Value::Array(clients)
}

fn oxidex_config(
    addr: std::net::SocketAddr,
    storage: serde_json::Value,
    algorithm: &str,
) -> serde_json::Value {
    json!({
        "issuer": format!("http://{addr}/dex"),
        "storage": storage,
        "web": {
            "http": addr.to_string(),
            // The bench is the proxy in front of many simulated clients (see
            // `load::login_to_code`), so per-client rate limits apply per login.
            "clientRemoteIP": {"header": "X-Forwarded-For", "trustedProxies": ["127.0.0.1/32"]}
        },
        "logger": {"level": "info", "format": "text"},
        "oauth2": {"skipApprovalScreen": true},
        "signer": {"type": "local", "config": {"algorithm": algorithm, "keysRotationPeriod": "6h"}},
        "staticClients": static_clients(),
        "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}]
    })
}

async fn oxidex(
    args: &Args,
    dir: &Path,
    storage: serde_json::Value,
    algorithm: &str,
    token_estimate: f64,
    gets: bool,
) -> SystemResult {
    let mut result = SystemResult {
        binary_mb: file_mb(&args.oxidex),
        ..SystemResult::default()
    };
    let run = oxidex_inner(
        args,
        dir,
        storage,
        algorithm,
        token_estimate,
        gets,
        &mut result,
    );
    if let Err(e) = run.await {
        result.errors.push(e.to_string());
    }
    result
}

async fn oxidex_inner(
    args: &Args,
    dir: &Path,
    storage: serde_json::Value,
    algorithm: &str,
    token_estimate: f64,
    gets: bool,
    result: &mut SystemResult,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    let config = dir.join("config.json");
    write_json(&config, &oxidex_config(addr, storage, algorithm))?;
    let start = || {
        let mut cmd = Command::new(&args.oxidex);
        cmd.arg("serve").arg(&config);
        cmd
    };
    let log = dir.join("oxidex.log");
    let first = Server::start("oxidex", start(), addr, "/dex/healthz", &log).await?;
    result.ready_first_ms = Some(first.ready.as_secs_f64() * 1e3);
    first.stop();
    let server = Server::start("oxidex", start(), addr, "/dex/healthz", &log).await?;
    result.ready_restart_ms = Some(server.ready.as_secs_f64() * 1e3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.rss_idle_mb = Some(server.rss_mb());

    let target = Arc::new(Target::new(addr, "/dex", "/auth", "/token"));
    let full = algorithm == "RS256";
    measure_provider(
        args,
        &server,
        &target,
        "/dex/.well-known/openid-configuration",
        "/dex/keys",
        token_estimate,
        gets,
        true,
        full,
        result,
    )
    .await?;
    result.rss_after_mb = Some(server.rss_mb());
    Ok(())
}

/// The measurements shared by every provider: check flow, GETs, code exchange, refresh,
/// full flows. `gets`, `flows` and `refresh` switch parts off (the ES256 instance only does
/// /token; oidc-provider issues refresh tokens only after a consent prompt, which the
/// comparable flow skips).
#[allow(clippy::too_many_arguments)]
async fn measure_provider(
    args: &Args,
    server: &Server,
    target: &Arc<Target>,
    discovery: &str,
    keys: &str,
    token_estimate: f64,
    gets: bool,
    flows: bool,
    refresh: bool,
    result: &mut SystemResult,
) -> Result<(), Error> {
    let window = Duration::from_secs_f64(args.secs);
    let addr = server.addr;
    // One complete login first: it proves the flow works and counts its requests.
    let check = closed_loop(
        addr,
        flow_states(target, 1),
        Duration::from_secs(10),
        1,
        load::full_flow,
    )
    .await;
    match check.outputs.first() {
        Some(hops) => result.hops = Some(*hops),
        None => {
            return Err(format!(
                "{}: a login flow failed: {}",
                server.name,
                check.first_error.unwrap_or_default()
            )
            .into());
        }
    }
    // The size of one token response, to compare with the signing hello's.
    let mut conn = crate::http::Conn::new(addr);
    let (code, _) = load::login_to_code(&mut conn, target, (63 << 40) | 0xff_ffff).await?;
    result.token_bytes = Some(load::exchange_code(&mut conn, target, &code).await?.bytes);
    if gets {
        if let Some(hello) = args.hello_addr {
            progress(&format!("  hello, alongside {}", server.name));
            result.hello_alongside = Some(wrk(&format!("http://{hello}/"), args.secs).await?);
        }
        if let Some(layered) = args.layered_hello_addr.filter(|_| server.name == "oxidex") {
            progress("  layered hello, alongside oxidex");
            result.layered_hello_alongside =
                Some(wrk(&format!("http://{layered}/"), args.secs).await?);
        }
        progress(&format!("  {}: GET discovery, keys", server.name));
        result.discovery = Some(wrk(&format!("http://{addr}{discovery}"), args.secs).await?);
        result.keys = Some(wrk(&format!("http://{addr}{keys}"), args.secs).await?);
    }

    // Codes minted beforehand: enough for the window at 1.5× the estimated rate,
    // minted for at most three windows.
    let wanted = (token_estimate * args.secs * 1.5).clamp(500.0, 80_000.0) as u64;
    progress(&format!("  {}: minting up to {wanted} codes", server.name));
    let minted = closed_loop(
        addr,
        flow_states(target, 32),
        window * 3,
        wanted,
        load::mint_code,
    )
    .await;
    note_errors(result, "minting codes", &minted);
    let mut queues: Vec<CodeQueue> = (0..64)
        .map(|_| CodeQueue {
            target: target.clone(),
            codes: Vec::new(),
        })
        .collect();
    for (i, code) in minted.outputs.into_iter().enumerate() {
        queues[i % 64].codes.push(code);
    }
    progress(&format!("  {}: /token code exchange", server.name));
    let cpu = server.cpu_secs();
    let exchanged = closed_loop(addr, queues, window, u64::MAX, load::exchange_next).await;
    let cpu = server.cpu_secs() - cpu;
    note_errors(result, "code exchange", &exchanged);
    result.token = Some(Measured::with_cpu(&exchanged, cpu));

    if flows {
        if refresh {
            progress(&format!("  {}: refresh_token grants", server.name));
            let mut chains = Vec::new();
            for i in 0..REFRESH_CLIENTS {
                let mut client = (**target).clone();
                client.client_id = format!("refresh-{i}");
                let client = Arc::new(client);
                let mut conn = crate::http::Conn::new(addr);
                let (code, _) = load::login_to_code(&mut conn, &client, i as u64).await?;
                let token = load::exchange_code(&mut conn, &client, &code)
                    .await?
                    .refresh
                    .ok_or("no refresh token with offline_access")?;
                chains.push(RefreshChain {
                    target: client,
                    token,
                });
            }
            let refreshed = closed_loop(addr, chains, window, u64::MAX, load::refresh_next).await;
            note_errors(result, "refresh", &refreshed);
            result.refresh = Some(Measured::from(&refreshed));
        }
        for (concurrency, slot) in [(1usize, 0usize), (32, 1)] {
            progress(&format!(
                "  {}: login flows at concurrency {concurrency}",
                server.name
            ));
            let states: Vec<FlowState> = flow_states(target, concurrency);
            let r = closed_loop(addr, states, window, 1_000_000, load::full_flow).await;
            note_errors(result, &format!("flows c={concurrency}"), &r);
            result.flows[slot] = Some(Measured::from(&r));
        }
    }
    Ok(())
}

fn note_errors<T>(result: &mut SystemResult, what: &str, r: &LoadResult<T>) {
    if r.errors > 0 {
        result.errors.push(format!(
            "{what}: {} errors, first: {}",
            r.errors,
            r.first_error.clone().unwrap_or_default()
        ));
    }
}

fn file_mb(path: &Path) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / 1_048_576.0)
}

async fn node_peer(dir: &Path, work: &Path, args: &Args, token_estimate: f64) -> SystemResult {
    let mut result = SystemResult::default();
    let run = async {
        let addr = free_addr()?;
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(dir)
            .env("PORT", addr.port().to_string());
        let discovery = "/.well-known/openid-configuration";
        let server = Server::start(
            "oidc-provider",
            cmd,
            addr,
            discovery,
            &work.join("oidc-provider.log"),
        )
        .await?;
        result.ready_first_ms = Some(server.ready.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        result.rss_idle_mb = Some(server.rss_mb());
        let target = Arc::new(Target::new(addr, "", "/auth", "/token"));
        // oidc-provider signs only the ID token (its access tokens are opaque): one signature.
        measure_provider(
            args,
            &server,
            &target,
            discovery,
            "/jwks",
            token_estimate * 2.0,
            true,
            true,
            false,
            &mut result,
        )
        .await?;
        result.rss_after_mb = Some(server.rss_mb());
        Ok::<(), Error>(())
    };
    if let Err(e) = run.await {
        result.errors.push(e.to_string());
    }
    result
}

async fn dex_peer(
    dex: &Path,
    dir: &Path,
    storage: serde_json::Value,
    args: &Args,
    token_estimate: f64,
    gets: bool,
) -> SystemResult {
    let mut result = SystemResult {
        binary_mb: file_mb(dex),
        ..SystemResult::default()
    };
    let run = async {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr()?;
        let mut config = oxidex_config(addr, storage, "RS256");
        if let Some(map) = config.as_object_mut() {
            map.remove("signer");
        }
        let path = dir.join("config.json");
        write_json(&path, &config)?;
        let start = || {
            let mut cmd = Command::new(dex);
            cmd.arg("serve").arg(&path);
            cmd
        };
        let log = dir.join("dex.log");
        let first = Server::start("Dex", start(), addr, "/dex/healthz", &log).await?;
        result.ready_first_ms = Some(first.ready.as_secs_f64() * 1e3);
        first.stop();
        let server = Server::start("Dex", start(), addr, "/dex/healthz", &log).await?;
        result.ready_restart_ms = Some(server.ready.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        result.rss_idle_mb = Some(server.rss_mb());
        let target = Arc::new(Target::new(addr, "/dex", "/auth", "/token"));
        measure_provider(
            args,
            &server,
            &target,
            "/dex/.well-known/openid-configuration",
            "/dex/keys",
            token_estimate,
            gets,
            true,
            true,
            &mut result,
        )
        .await?;
        result.rss_after_mb = Some(server.rss_mb());
        Ok::<(), Error>(())
    };
    if let Err(e) = run.await {
        result.errors.push(e.to_string());
    }
    result
}

/// oxidex (RS256, SQLite) with the password DB as its only connector and one
/// `staticPasswords` user hashed at bcrypt cost 10: login flows at concurrency
/// [`password_concurrency`] that POST the login form with the right password, each
/// ending in a code exchange, for at least [`PASSWORD_WINDOW`].
/// Every login comes from its own client address (see `load::login_to_code`), as many
/// users behind a proxy would: the per-(user, address) password limit then never
/// refuses a correct password. From one address, only 5 attempts per user are let in at
/// once (`PASSWORD_PER_USER`), so 32 concurrent logins of one user would be refused.
async fn oxidex_password(args: &Args, dir: &Path) -> SystemResult {
    let mut result = SystemResult::default();
    let run = async {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr()?;
        let storage = json!({"type": "sqlite3", "config": {"file": dir.join("oxidex.db")}});
        let mut config = oxidex_config(addr, storage, "RS256");
        if let Some(map) = config.as_object_mut() {
            // With one connector, /auth goes straight to its login form.
            map.remove("connectors");
            map.insert("enablePasswordDB".into(), json!(true));
            map.insert(
                "staticPasswords".into(),
                json!([{
                    "email": PASSWORD_USER,
                    "hash": ceiling::password_hash()?,
                    "username": "bench",
                    "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466"
                }]),
            );
        }
        let path = dir.join("config.json");
        write_json(&path, &config)?;
        let mut cmd = Command::new(&args.oxidex);
        cmd.arg("serve").arg(&path);
        let server =
            Server::start("oxidex", cmd, addr, "/dex/healthz", &dir.join("oxidex.log")).await?;
        let mut target = Target::new(addr, "/dex", "/auth", "/token");
        target.login = PASSWORD_USER.into();
        target.password = ceiling::PASSWORD.into();
        let target = Arc::new(target);
        let check = closed_loop(
            addr,
            flow_states(&target, 1),
            Duration::from_secs(10),
            1,
            load::full_flow,
        )
        .await;
        result.hops = check.outputs.first().copied();
        if result.hops.is_none() {
            return Err(format!(
                "a password login failed: {}",
                check.first_error.unwrap_or_default()
            )
            .into());
        }
        let concurrency = password_concurrency();
        progress(&format!(
            "  oxidex: password logins at concurrency {concurrency}"
        ));
        let window = Duration::from_secs_f64(args.secs).max(PASSWORD_WINDOW);
        let r = closed_loop(
            addr,
            flow_states(&target, concurrency),
            window,
            1_000_000,
            load::full_flow,
        )
        .await;
        note_errors(&mut result, &format!("password logins c={concurrency}"), &r);
        result.flows[1] = Some(Measured::from(&r));
        result.rss_after_mb = Some(server.rss_mb());
        Ok::<(), Error>(())
    };
    if let Err(e) = run.await {
        result.errors.push(e.to_string());
    }
    result
}

/// The shortest window for the bcrypt ceiling and the password logins.
const PASSWORD_WINDOW: Duration = Duration::from_secs(10);

/// Four password logins per core: enough to keep every bcrypt slot of oxidex's password
/// gate (one per core) busy while the other hops of a login run, and well inside the
/// gate's queue (16 per core), which answers 503 beyond it.
pub fn password_concurrency() -> usize {
    4 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The e-mail (login) of the bench's `staticPasswords` user.
const PASSWORD_USER: &str = "bench@example.org";
