//! The results of one run and their rendering as one Markdown table (plus notes).

use crate::ceiling::Ceilings;
use crate::load::LoadResult;
use crate::procs::WrkResult;

/// Rate and latency of one closed-loop measurement.
#[derive(Clone, Copy)]
pub struct Measured {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The server's CPU time per operation in µs, where it was measured: unlike the
    /// rate it hardly moves when a neighbour takes CPU away from the whole machine.
    pub server_cpu_us: Option<f64>,
}

impl Measured {
    pub fn from<T>(r: &LoadResult<T>) -> Self {
        Self {
            rate: r.rate(),
            p50_ms: r.pct_ms(50),
            p99_ms: r.pct_ms(99),
            server_cpu_us: None,
        }
    }

    /// With the server CPU `cpu_secs` spent over the run's operations.
    pub fn with_cpu<T>(r: &LoadResult<T>, cpu_secs: f64) -> Self {
        Self {
            server_cpu_us: (r.ok > 0).then(|| cpu_secs * 1e6 / r.ok as f64),
            ..Self::from(r)
        }
    }
}

#[derive(Default)]
pub struct SystemResult {
    pub ready_first_ms: Option<f64>,
    pub ready_restart_ms: Option<f64>,
    pub rss_idle_mb: Option<f64>,
    pub rss_after_mb: Option<f64>,
    pub discovery: Option<WrkResult>,
    pub keys: Option<WrkResult>,
    /// hello, measured with wrk just before this system's GETs.
    pub hello_alongside: Option<WrkResult>,
    /// The layered hello, measured with wrk just before oxidex's GETs.
    pub layered_hello_alongside: Option<WrkResult>,
    pub token: Option<Measured>,
    pub token_es256: Option<Measured>,
    /// Size of one token response body (RS256 / ES256 instance).
    pub token_bytes: Option<usize>,
    pub token_es256_bytes: Option<usize>,
    pub refresh: Option<Measured>,
    /// Concurrency 1 and 32.
    pub flows: [Option<Measured>; 2],
    /// Requests per complete login, /token included.
    pub hops: Option<u32>,
    pub binary_mb: Option<f64>,
    pub errors: Vec<String>,
}

pub struct Report {
    pub secs: f64,
    pub context: Vec<String>,
    pub ceilings: Option<Ceilings>,
    pub hello_wrk: Option<WrkResult>,
    pub hello_loop: Option<Measured>,
    pub hello_rss: f64,
    /// `examples/layered_hello.rs` (hello behind oxidex's connection handling and
    /// observability layer) at the start of the run.
    pub layered_hello_wrk: Option<WrkResult>,
    /// `examples/signing_hello.rs` under the `/token` load (RS256, ES256), and the size
    /// of its response body.
    pub signing_hello: [Option<Measured>; 2],
    pub signing_hello_bytes: [Option<usize>; 2],
    /// bcrypt verifications/s at cost 10 on every core.
    pub bcrypt_ceiling: Option<f64>,
    pub oxidex: SystemResult,
    /// oxidex with the password DB: password logins (`crate::password_concurrency`) in `flows[1]`.
    pub oxidex_password: Option<SystemResult>,
    /// Login flows (concurrency 1 and 32) of oxidex with an ES256 signer.
    pub oxidex_es256_flows: [Option<Measured>; 2],
    pub node: Option<SystemResult>,
    pub dex: Option<SystemResult>,
    /// oxidex (RS256) and Dex on PostgreSQL: the storage table.
    pub oxidex_pg: Option<SystemResult>,
    pub dex_pg: Option<SystemResult>,
    /// Only the storage table was measured.
    pub storage_only: bool,
}

/// 12345.6 → "12,346"; 12.34 → "12.3"; 1.234 → "1.23".
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn check(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

fn wrk_cell(r: &Option<WrkResult>) -> String {
    match r {
        Some(r) if r.bad > 0 => format!(
            "{} (p50 {} / p99 {} ms, {} non-2xx)",
            num(r.rps),
            num(r.p50_ms),
            num(r.p99_ms),
            r.bad
        ),
        Some(r) => format!(
            "{} (p50 {} / p99 {} ms)",
            num(r.rps),
            num(r.p50_ms),
            num(r.p99_ms)
        ),
        None => "—".into(),
    }
}

fn measured_cell(m: &Option<Measured>) -> String {
    match m {
        Some(m) => {
            let cpu = m.server_cpu_us.map_or(String::new(), |us| {
                format!("; server CPU {} µs/op", num(us))
            });
            format!(
                "{} (p50 {} / p99 {} ms{cpu})",
                num(m.rate),
                num(m.p50_ms),
                num(m.p99_ms)
            )
        }
        None => "—".into(),
    }
}

fn opt(x: Option<f64>, unit: &str) -> String {
    x.map_or("—".into(), |x| format!("{}{unit}", num(x)))
}

/// A figure of the issue-15 table: at least or at most `bound`.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, x: f64) -> bool {
        match self {
            Goal::AtLeast(bound) => x >= bound,
            Goal::AtMost(bound) => x <= bound,
        }
    }
}

/// `name rate` or `name not measured`.
fn named(name: &str, x: Option<f64>, unit: &str) -> String {
    match x.filter(|x| x.is_finite()) {
        Some(x) => format!("{name} {}{unit}", num(x)),
        None => format!("{name} not measured"),
    }
}

/// One row: `figure | value | ratio | target | met?`; the goal applies to the ratio,
/// or to `value` itself when there is no ratio (`ratio_of: None`).
fn goal_row(
    figure: &str,
    value: String,
    judged: Option<f64>,
    is_ratio: bool,
    goal: Goal,
    target: &str,
) -> String {
    let judged = judged.filter(|x| x.is_finite());
    let ratio = match (is_ratio, judged) {
        (true, Some(r)) => format!("{} ×", num(r)),
        _ => "—".into(),
    };
    let met = match judged {
        Some(x) if goal.met(x) => "✔ met",
        Some(_) => "✘ not met",
        None => "not measured",
    };
    format!("| {figure} | {value} | {ratio} | {target} | {met} |\n")
}

/// `a / b` when both were measured.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Report {
    pub fn new(secs: f64) -> Self {
        Self {
            secs,
            context: Vec::new(),
            ceilings: None,
            hello_wrk: None,
            hello_loop: None,
            hello_rss: f64::NAN,
            layered_hello_wrk: None,
            signing_hello: [None, None],
            signing_hello_bytes: [None, None],
            bcrypt_ceiling: None,
            oxidex: SystemResult::default(),
            oxidex_password: None,
            oxidex_es256_flows: [None, None],
            node: None,
            dex: None,
            oxidex_pg: None,
            dex_pg: None,
            storage_only: false,
        }
    }

    /// oxidex and Dex on SQLite and on PostgreSQL, the same workload, one row per storage-bound
    /// measurement; ratios against the two-signature ceiling and between the columns.
    fn storage_table(&self) -> String {
        let none = SystemResult::default();
        let ox = &self.oxidex;
        let ox_pg = self.oxidex_pg.as_ref().unwrap_or(&none);
        let dex = self.dex.as_ref().unwrap_or(&none);
        let dex_pg = self.dex_pg.as_ref().unwrap_or(&none);
        let two_sig = self
            .ceilings
            .as_ref()
            .map_or(f64::NAN, |c| c.rs256[1] / 2.0);
        let mut out = String::from(
            "| measure (RS256) | oxidex SQLite | oxidex PostgreSQL | Dex SQLite | Dex PostgreSQL | ceiling / ratio |\n\
             |---|---|---|---|---|---|\n",
        );
        type Pick = fn(&SystemResult) -> Option<Measured>;
        let rows: [(&str, Pick); 4] = [
            ("POST /token code exchange/s", |s| s.token),
            ("POST /token refresh_token grants/s", |s| s.refresh),
            ("login flows/s, concurrency 1", |s| s.flows[0]),
            ("login flows/s, concurrency 32", |s| s.flows[1]),
        ];
        for (i, (name, pick)) in rows.into_iter().enumerate() {
            let rate = |s: &SystemResult| pick(s).map_or(f64::NAN, |m| m.rate);
            let mut ratio = format!(
                "oxidex PostgreSQL = {} × oxidex SQLite, {} × Dex PostgreSQL; Dex PostgreSQL = {} × Dex SQLite",
                num(rate(ox_pg) / rate(ox)),
                num(rate(ox_pg) / rate(dex_pg)),
                num(rate(dex_pg) / rate(dex)),
            );
            if i == 0 {
                ratio = format!(
                    "two-signature ceiling {}: oxidex SQLite {} ×, PostgreSQL {} × it; {ratio}",
                    num(two_sig),
                    num(rate(ox) / two_sig),
                    num(rate(ox_pg) / two_sig),
                );
            }
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {ratio} |\n",
                measured_cell(&pick(ox)),
                measured_cell(&pick(ox_pg)),
                measured_cell(&pick(dex)),
                measured_cell(&pick(dex_pg)),
            ));
        }
        let ready = |s: &SystemResult| match (s.ready_first_ms, s.ready_restart_ms) {
            (Some(a), Some(b)) => format!("{} / {}", num(a), num(b)),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "| exec → ready ms (empty DB / restart) | {} | {} | {} | {} | |\n",
            ready(ox),
            ready(ox_pg),
            ready(dex),
            ready(dex_pg)
        ));
        out.push_str(&format!(
            "| RSS after the load, MB | {} | {} | {} | {} | |\n",
            opt(ox.rss_after_mb, ""),
            opt(ox_pg.rss_after_mb, ""),
            opt(dex.rss_after_mb, ""),
            opt(dex_pg.rss_after_mb, "")
        ));
        out
    }

    /// Every figure of issue 15 with its target; a peer that was not run (SKIP_DEX,
    /// SKIP_NODE) makes its rows "not measured".
    fn targets_table(&self) -> String {
        let ox = &self.oxidex;
        let rate = |m: &Option<Measured>| m.map(|m| m.rate);
        let node = self.node.as_ref();
        let dex = self.dex.as_ref();
        let hello = self.hello_for(ox);
        let mut out =
            String::from("| figure | value | ratio | target | met? |\n|---|---|---|---|---|\n");
        for (slot, algorithm, token, bound) in [
            (0, "RS256", ox.token, 0.85),
            (1, "ES256", ox.token_es256, 0.25),
        ] {
            out.push_str(&goal_row(
                &format!("/token code exchange {algorithm} vs the {algorithm} signing hello"),
                format!(
                    "{}, {}",
                    named("oxidex", rate(&token), "/s"),
                    named("signing hello", rate(&self.signing_hello[slot]), "/s")
                ),
                ratio(rate(&token), rate(&self.signing_hello[slot])),
                true,
                Goal::AtLeast(bound),
                &format!("≥ {bound} ×"),
            ));
        }
        let node_flows = node.and_then(|n| rate(&n.flows[1]));
        for (name, ours, bound) in [
            ("oxidex RS256", rate(&ox.flows[1]), 2.0),
            ("oxidex ES256", rate(&self.oxidex_es256_flows[1]), 4.0),
        ] {
            out.push_str(&goal_row(
                &format!("login flows/s at concurrency 32, {name} vs oidc-provider"),
                format!(
                    "{}, {}",
                    named(name, ours, "/s"),
                    named("oidc-provider", node_flows, "/s")
                ),
                ratio(ours, node_flows),
                true,
                Goal::AtLeast(bound),
                &format!("≥ {bound} ×"),
            ));
        }
        for (slot, concurrency) in [(0usize, 1), (1, 32)] {
            let theirs = dex.and_then(|d| rate(&d.flows[slot]));
            out.push_str(&goal_row(
                &format!("login flows/s at concurrency {concurrency}, oxidex RS256 vs Dex"),
                format!(
                    "{}, {}",
                    named("oxidex", rate(&ox.flows[slot]), "/s"),
                    named("Dex", theirs, "/s")
                ),
                ratio(rate(&ox.flows[slot]), theirs),
                true,
                Goal::AtLeast(10.0),
                "≥ 10 ×",
            ));
        }
        // The layered rows are re-based: hello pays nothing per request; every oxidex
        // route pays the header-read timer, connection tracking, request id, span and
        // metrics.
        let ceilings = [
            ("hello", "hello (wrk)", hello),
            (
                "layered hello",
                "the layered hello (wrk; re-based, see bench/README.md)",
                self.layered_hello_for(ox),
            ),
        ];
        for (ceiling, against, rate) in ceilings {
            for (name, get) in [("discovery", &ox.discovery), ("/keys", &ox.keys)] {
                let ours = get.as_ref().map(|r| r.rps);
                out.push_str(&goal_row(
                    &format!("GET {name} vs {against}"),
                    format!(
                        "{}, {}",
                        named("oxidex", ours, " req/s"),
                        named(ceiling, rate, " req/s")
                    ),
                    ratio(ours, rate),
                    true,
                    Goal::AtLeast(0.9),
                    "≥ 0.9 ×",
                ));
            }
        }
        out.push_str(&goal_row(
            "exec → ready, empty database (RS256)",
            named("oxidex", ox.ready_first_ms, " ms"),
            ox.ready_first_ms,
            false,
            Goal::AtMost(20.0),
            "≤ 20 ms",
        ));
        let dex_rss = dex.and_then(|d| d.rss_after_mb);
        out.push_str(&goal_row(
            "RSS after the full load vs Dex's",
            format!(
                "{}, {}",
                named("oxidex", ox.rss_after_mb, " MB"),
                named("Dex", dex_rss, " MB")
            ),
            ratio(ox.rss_after_mb, dex_rss),
            true,
            Goal::AtMost(0.8),
            "≤ 0.8 ×",
        ));
        let logins = self
            .oxidex_password
            .as_ref()
            .and_then(|p| rate(&p.flows[1]));
        out.push_str(&goal_row(
            &format!(
                "password logins/s (bcrypt cost 10, concurrency {}) vs the bcrypt ceiling",
                crate::password_concurrency()
            ),
            format!(
                "{}, {}",
                named("oxidex", logins, "/s"),
                named(
                    &format!("ceiling ({} cores)", cores()),
                    self.bcrypt_ceiling,
                    "/s"
                )
            ),
            ratio(logins, self.bcrypt_ceiling),
            true,
            Goal::AtLeast(0.9),
            "≥ 0.9 ×",
        ));
        out
    }

    /// The layered hello's rate to compare oxidex's GETs with, chosen like
    /// [`Report::hello_for`]'s.
    fn layered_hello_for(&self, system: &SystemResult) -> Option<f64> {
        system
            .layered_hello_alongside
            .as_ref()
            .or(self.layered_hello_wrk.as_ref())
            .map(|h| h.rps)
    }

    /// hello's rate to compare `system`'s GETs with: the one measured just before
    /// them when there is one, else the one at the start of the run.
    fn hello_for(&self, system: &SystemResult) -> Option<f64> {
        system
            .hello_alongside
            .as_ref()
            .or(self.hello_wrk.as_ref())
            .map(|h| h.rps)
    }

    pub fn render(&self) -> String {
        let ox = &self.oxidex;
        let none = SystemResult::default();
        let node = self.node.as_ref().unwrap_or(&none);
        let dex = self.dex.as_ref().unwrap_or(&none);
        let hello = self.hello_wrk.as_ref().map_or(f64::NAN, |h| h.rps);
        let c = self.ceilings.as_ref();
        let rs = c.map_or([f64::NAN; 2], |c| c.rs256);
        let es = c.map_or([f64::NAN; 2], |c| c.es256);
        let mut rows: Vec<[String; 6]> = Vec::new();
        let mut row = |cells: [&str; 6]| rows.push(cells.map(str::to_owned));

        row([
            "RS256 signatures/s, aws-lc-rs, 1 / 2 threads",
            "",
            "",
            "",
            &format!("{} / {}", num(rs[0]), num(rs[1])),
            "ceiling",
        ]);
        row([
            "ES256 signatures/s, aws-lc-rs, 1 / 2 threads",
            "",
            "",
            "",
            &format!("{} / {}", num(es[0]), num(es[1])),
            "ceiling",
        ]);
        let oxidex_bytes = [ox.token_bytes, ox.token_es256_bytes];
        for (slot, algorithm) in ["RS256", "ES256"].into_iter().enumerate() {
            let bytes = |b: Option<usize>| b.map_or("—".into(), |b| b.to_string());
            row([
                &format!(
                    "signing hello POST /token/s, {algorithm} (two signatures, Rust loop, 64 conns)"
                ),
                "",
                "",
                "",
                &format!(
                    "{}; response {} bytes (oxidex's {})",
                    measured_cell(&self.signing_hello[slot]),
                    bytes(self.signing_hello_bytes[slot]),
                    bytes(oxidex_bytes[slot])
                ),
                "ceiling",
            ]);
        }
        row([
            &format!("bcrypt cost 10 verifications/s, all {} cores", cores()),
            "",
            "",
            "",
            &opt(self.bcrypt_ceiling, ""),
            "ceiling",
        ]);
        row([
            "hello req/s (axum, wrk)",
            "",
            "",
            "",
            &wrk_cell(&self.hello_wrk),
            "ceiling",
        ]);
        row([
            "layered hello req/s (hello behind oxidex's connection handling and observability layer, wrk)",
            "",
            "",
            "",
            &wrk_cell(&self.layered_hello_wrk),
            "ceiling",
        ]);
        row([
            "hello req/s (axum, Rust loop, 64 conns)",
            "",
            "",
            "",
            &self.hello_loop.map_or("—".into(), |m| num(m.rate)),
            "load-loop calibration",
        ]);
        fn discovery(s: &SystemResult) -> &Option<WrkResult> {
            &s.discovery
        }
        fn keys(s: &SystemResult) -> &Option<WrkResult> {
            &s.keys
        }
        type Get = fn(&SystemResult) -> &Option<WrkResult>;
        let gets: [(&str, Get); 2] = [("GET discovery req/s", discovery), ("GET keys req/s", keys)];
        row([
            "hello req/s (wrk), just before each system's GETs",
            &wrk_cell(&ox.hello_alongside),
            &wrk_cell(&node.hello_alongside),
            &wrk_cell(&dex.hello_alongside),
            "",
            "the hello the GET ratios use",
        ]);
        row([
            "layered hello req/s (wrk), just before oxidex's GETs",
            &wrk_cell(&ox.layered_hello_alongside),
            "",
            "",
            "",
            "the layered hello the GET ratios use",
        ]);
        let hello = self.hello_for(ox).unwrap_or(hello);
        let layered = self.layered_hello_for(ox).unwrap_or(f64::NAN);
        for (name, get) in gets {
            let ratio = get(ox).as_ref().map_or(f64::NAN, |r| r.rps / hello);
            let ratio_layered = get(ox).as_ref().map_or(f64::NAN, |r| r.rps / layered);
            row([
                name,
                &wrk_cell(get(ox)),
                &wrk_cell(get(node)),
                &wrk_cell(get(dex)),
                &format!(
                    "{} × hello, {} × the layered hello",
                    num(ratio),
                    num(ratio_layered)
                ),
                &format!("≥ 0.8 × hello {}", check(ratio >= 0.8)),
            ]);
        }
        let two_sig = rs[1] / 2.0;
        let ratio = ox.token.map_or(f64::NAN, |m| m.rate / two_sig);
        row([
            "POST /token code exchange/s, RS256",
            &measured_cell(&ox.token),
            &measured_cell(&node.token),
            &measured_cell(&dex.token),
            &format!(
                "two-signature ceiling {}; oxidex {} × it, {} × the signing hello",
                num(two_sig),
                num(ratio),
                num(ox.token.map_or(f64::NAN, |m| m.rate)
                    / self.signing_hello[0].map_or(f64::NAN, |m| m.rate))
            ),
            &format!("≥ 0.85 × ceiling {}", check(ratio >= 0.85)),
        ]);
        let two_sig_es = es[1] / 2.0;
        let ratio_es = ox.token_es256.map_or(f64::NAN, |m| m.rate / two_sig_es);
        row([
            "POST /token code exchange/s, ES256",
            &measured_cell(&ox.token_es256),
            "",
            "",
            &format!(
                "two-signature ceiling {}; oxidex {} × it, {} × the signing hello",
                num(two_sig_es),
                num(ratio_es),
                num(ox.token_es256.map_or(f64::NAN, |m| m.rate)
                    / self.signing_hello[1].map_or(f64::NAN, |m| m.rate))
            ),
            "(no target)",
        ]);
        row([
            "POST /token refresh_token grants/s, RS256",
            &measured_cell(&ox.refresh),
            &measured_cell(&node.refresh),
            &measured_cell(&dex.refresh),
            "",
            "",
        ]);
        for (slot, concurrency) in [(0usize, 1), (1, 32)] {
            let rate = |s: &SystemResult| s.flows[slot].map_or(f64::NAN, |m| m.rate);
            let vs_node = rate(ox) / rate(node);
            let vs_dex = rate(ox) / rate(dex);
            row([
                &format!("login flows/s, concurrency {concurrency}"),
                &measured_cell(&ox.flows[slot]),
                &measured_cell(&node.flows[slot]),
                &measured_cell(&dex.flows[slot]),
                &format!(
                    "oxidex = {} × oidc-provider, {} × Dex",
                    num(vs_node),
                    num(vs_dex)
                ),
                &format!(
                    "≥ 10 × oidc-provider {}, ≥ 3 × Dex {}",
                    check(vs_node >= 10.0),
                    check(vs_dex >= 3.0)
                ),
            ]);
        }
        for (slot, concurrency) in [(0usize, 1), (1, 32)] {
            row([
                &format!("login flows/s, concurrency {concurrency}, oxidex with an ES256 signer"),
                &measured_cell(&self.oxidex_es256_flows[slot]),
                "",
                "",
                "",
                "(shows what RS256 costs)",
            ]);
        }
        let password = self.oxidex_password.as_ref().unwrap_or(&none);
        row([
            &format!(
                "password logins/s (bcrypt cost 10), concurrency {}, oxidex RS256",
                crate::password_concurrency()
            ),
            &measured_cell(&password.flows[1]),
            "",
            "",
            &format!(
                "{} × the bcrypt ceiling; {} requests per login",
                num(password.flows[1].map_or(f64::NAN, |m| m.rate)
                    / self.bcrypt_ceiling.unwrap_or(f64::NAN)),
                password.hops.map_or("—".into(), |h| h.to_string())
            ),
            "",
        ]);
        let hops = |s: &SystemResult| s.hops.map_or("—".into(), |h| h.to_string());
        row([
            "HTTP requests per login flow (/token included)",
            &hops(ox),
            &hops(node),
            &hops(dex),
            "",
            "",
        ]);
        let idle = ox.rss_idle_mb.unwrap_or(f64::NAN);
        row([
            "RSS idle, MB",
            &opt(ox.rss_idle_mb, ""),
            &opt(node.rss_idle_mb, ""),
            &opt(dex.rss_idle_mb, ""),
            &format!("hello after its load: {}", num(self.hello_rss)),
            &format!("≤ 15 {}", check(idle <= 15.0)),
        ]);
        let after = ox.rss_after_mb.unwrap_or(f64::NAN);
        row([
            "RSS after the load, MB",
            &opt(ox.rss_after_mb, ""),
            &opt(node.rss_after_mb, ""),
            &opt(dex.rss_after_mb, ""),
            "",
            &format!("≤ 64 {}", check(after <= 64.0)),
        ]);
        let ready = |s: &SystemResult| match (s.ready_first_ms, s.ready_restart_ms) {
            (Some(a), Some(b)) => format!("{} / {}", num(a), num(b)),
            (Some(a), None) => num(a),
            _ => "—".into(),
        };
        let first = ox.ready_first_ms.unwrap_or(f64::NAN);
        let again = ox.ready_restart_ms.unwrap_or(f64::NAN);
        row([
            "exec → ready ms (empty DB / restart)",
            &ready(ox),
            &ready(node),
            &ready(dex),
            "",
            &format!(
                "≤ 100: {} / {}",
                check(first <= 100.0),
                check(again <= 100.0)
            ),
        ]);
        row([
            "binary size, MB",
            &opt(ox.binary_mb, ""),
            "(node + node_modules)",
            &opt(dex.binary_mb, ""),
            "",
            "",
        ]);

        let mut out = String::new();
        for line in &self.context {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        if !self.storage_only {
            out.push_str(
                "| measure | oxidex | oidc-provider | Dex | ceiling / ratio | oxidex target |\n",
            );
            out.push_str("|---|---|---|---|---|---|\n");
            for r in rows {
                out.push_str(&format!("| {} |\n", r.join(" | ")));
            }
        }
        if !self.storage_only {
            out.push_str("\nIssue 15 targets (ratios within this run).\n\n");
            out.push_str(&self.targets_table());
        }
        if self.storage_only || self.oxidex_pg.is_some() || self.dex_pg.is_some() {
            if !self.storage_only {
                out.push_str("\nStorage: the same workload on SQLite and on PostgreSQL.\n\n");
            }
            out.push_str(&self.storage_table());
        }
        let mut errors = Vec::new();
        for (name, errs) in [
            ("oxidex", &ox.errors[..]),
            (
                "oxidex with the password DB",
                &self.oxidex_password.as_ref().unwrap_or(&none).errors[..],
            ),
            ("oidc-provider", &node.errors[..]),
            ("Dex", &dex.errors[..]),
            (
                "oxidex on PostgreSQL",
                &self.oxidex_pg.as_ref().unwrap_or(&none).errors[..],
            ),
            (
                "Dex on PostgreSQL",
                &self.dex_pg.as_ref().unwrap_or(&none).errors[..],
            ),
        ] {
            for e in errs {
                errors.push(format!("- {name}: {e}"));
            }
        }
        if !errors.is_empty() {
            out.push_str("\nErrors during the run:\n");
            out.push_str(&errors.join("\n"));
            out.push('\n');
        }
        out.push_str(&format!(
            "\n{} s per measurement. GETs: wrk -t2 -c64 (keep-alive). POSTs and flows: Rust loop (tokio + hyper, one keep-alive \
             connection per worker; 64 workers for /token, 1 or 32 for flows). Latencies are per request for wrk and per operation \
             (one /token call, one whole login) for the Rust loop.\n",
            num(self.secs)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.6), "1,000");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(f64::NAN), "—");
    }

    #[test]
    fn an_empty_report_still_renders_one_table() {
        let text = Report::new(1.0).render();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("| measure")).count(),
            1
        );
        assert!(text.contains("≥ 0.85 × ceiling ✘"));
        assert!(!text.contains("oxidex PostgreSQL"));
    }

    fn measured(rate: f64) -> Option<Measured> {
        Some(Measured {
            rate,
            p50_ms: 1.0,
            p99_ms: 2.0,
            server_cpu_us: None,
        })
    }

    fn target_line<'a>(text: &'a str, figure: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("| {figure}")))
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{text}"))
    }

    #[test]
    fn every_issue_15_figure_has_a_row_and_missing_ones_say_so() {
        let text = Report::new(1.0).render();
        let table = &text[text.find("Issue 15 targets").unwrap()..];
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
            .collect();
        assert_eq!(rows.len(), 13, "{table}");
        assert!(
            rows.iter().all(|r| r.ends_with("| not measured |")),
            "{table}"
        );
    }

    #[test]
    fn targets_are_judged_on_ratios_within_the_run() {
        let mut report = Report::new(1.0);
        report.signing_hello = [measured(1000.0), measured(10_000.0)];
        report.oxidex.token = measured(850.0);
        report.oxidex.token_es256 = measured(2000.0);
        report.oxidex.flows = [measured(300.0), measured(900.0)];
        report.oxidex_es256_flows = [measured(400.0), measured(1500.0)];
        report.oxidex.ready_first_ms = Some(25.0);
        report.oxidex.rss_after_mb = Some(30.0);
        report.node = Some(SystemResult {
            flows: [measured(200.0), measured(400.0)],
            ..SystemResult::default()
        });
        report.bcrypt_ceiling = Some(20.0);
        report.oxidex_password = Some(SystemResult {
            flows: [None, measured(18.0)],
            ..SystemResult::default()
        });
        let wrk = |rps| {
            Some(WrkResult {
                rps,
                p50_ms: 0.5,
                p99_ms: 1.0,
                bad: 0,
            })
        };
        // The rates measured just before oxidex's GETs win over the run's first ones.
        report.hello_wrk = wrk(1.0);
        report.layered_hello_wrk = wrk(1.0);
        report.oxidex.hello_alongside = wrk(100_000.0);
        report.oxidex.layered_hello_alongside = wrk(80_000.0);
        report.oxidex.discovery = wrk(76_000.0);
        report.oxidex.keys = wrk(70_000.0);
        let text = report.render();
        let row = |figure| target_line(&text, figure).to_owned();
        assert!(row("/token code exchange RS256").ends_with("| 0.85 × | ≥ 0.85 × | ✔ met |"));
        assert!(row("/token code exchange ES256").ends_with("| 0.20 × | ≥ 0.25 × | ✘ not met |"));
        assert!(
            row("login flows/s at concurrency 32, oxidex RS256 vs oidc")
                .contains("| 2.25 × | ≥ 2 × | ✔ met |")
        );
        assert!(
            row("login flows/s at concurrency 32, oxidex ES256 vs oidc")
                .contains("| 3.75 × | ≥ 4 × | ✘ not met |")
        );
        // Dex was not run (SKIP_DEX): its rows are not judged.
        let dex = row("login flows/s at concurrency 1, oxidex RS256 vs Dex");
        assert!(dex.contains("Dex not measured") && dex.ends_with("| not measured |"));
        assert!(row("RSS after the full load").ends_with("| not measured |"));
        assert!(row("exec → ready, empty").ends_with("| — | ≤ 20 ms | ✘ not met |"));
        assert!(
            row("password logins/s (bcrypt cost 10, concurrency")
                .contains("| 0.90 × | ≥ 0.9 × | ✔ met |")
        );
        assert!(row("GET discovery vs hello").ends_with("| 0.76 × | ≥ 0.9 × | ✘ not met |"));
        assert!(
            row("GET discovery vs the layered hello").ends_with("| 0.95 × | ≥ 0.9 × | ✔ met |")
        );
        assert!(
            row("GET /keys vs the layered hello").ends_with("| 0.88 × | ≥ 0.9 × | ✘ not met |")
        );
    }

    #[test]
    fn storage_only_renders_just_the_storage_table() {
        let mut report = Report::new(1.0);
        report.storage_only = true;
        report.oxidex.token = Some(Measured {
            rate: 100.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            server_cpu_us: None,
        });
        report.oxidex_pg = Some(SystemResult {
            token: Some(Measured {
                rate: 50.0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                server_cpu_us: None,
            }),
            errors: vec!["boom".into()],
            ..SystemResult::default()
        });
        let text = report.render();
        assert!(!text.contains("| measure | oxidex | oidc-provider"));
        assert!(text.contains("| measure (RS256) | oxidex SQLite | oxidex PostgreSQL"));
        assert!(text.contains("oxidex PostgreSQL = 0.50 × oxidex SQLite"));
        assert!(text.contains("- oxidex on PostgreSQL: boom"));
    }
}
