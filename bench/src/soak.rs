//! The soak: one oxidex (RS256, SQLite) under a mixed workload at concurrency 64 for a
//! given time, nobody scraping `/metrics`. Each worker has its own client
//! (`refresh-<i>`, so the per-client refresh-token cap of one worker never prunes
//! another's tokens) and cycles through five operations: a login flow ending in a code
//! exchange, a refresh grant with the newest refresh token, userinfo with the newest
//! access token, discovery and `/keys`. Every 10 s it samples oxidex's RSS and the p99
//! latency of each kind of operation (a login flow is one operation: every hop and the
//! code exchange).
//!
//! The soak fails when any request fails, or when RSS after the first minute rises
//! more than [`RSS_TOLERANCE_MB`] above the sample at the first minute.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;

use crate::http::{Conn, Error};
use crate::load::{self, Target};
use crate::procs::{Server, free_addr};
use crate::table::num;

/// Concurrent workers (each one keep-alive connection and one client).
pub const WORKERS: usize = 64;

/// RSS may rise this much after the first minute, while the allocator's arenas and
/// tokio's caches still settle (short runs on a loaded 2-core VM moved 1–4 MB between
/// samples). A leak of 100 bytes per operation at the ~160 operations/s this workload
/// reaches on that VM adds ~9 MB over the nine minutes after the first.
pub const RSS_TOLERANCE_MB: f64 = 8.0;

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The RSS rule compares with the first sample at or after this time.
const BASELINE_AT_SECS: f64 = 60.0;
/// Error messages kept for the report (every error is counted).
const KEPT_ERRORS: usize = 10;

pub const KINDS: [&str; 5] = ["login flow", "refresh", "userinfo", "discovery", "keys"];

/// One 10-second sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the load started, at the end of the sample.
    pub t: f64,
    pub rss_mb: f64,
    /// Per kind, in [`KINDS`] order; NaN when the kind did not complete in the sample.
    pub p99_ms: [f64; 5],
    pub ops: [u64; 5],
    pub errors: u64,
}

pub struct SoakReport {
    pub secs: f64,
    pub context: Vec<String>,
    pub samples: Vec<Sample>,
    pub first_errors: Vec<String>,
}

/// What the workers report to the sampler.
#[derive(Default)]
struct Window {
    latencies: [Vec<Duration>; 5],
    errors: u64,
    first_errors: Vec<String>,
}

fn lock(window: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    window.lock().unwrap_or_else(|p| p.into_inner())
}

struct Worker {
    target: Arc<Target>,
    userinfo_path: String,
    discovery_path: String,
    keys_path: String,
    n: u64,
    access: Option<String>,
    refresh: Option<String>,
}

impl Worker {
    /// One operation of `kind`; without tokens yet, a login flow first.
    async fn op(&mut self, conn: &mut Conn, kind: usize) -> Result<usize, Error> {
        let kind = if self.access.is_none() || self.refresh.is_none() {
            0
        } else {
            kind
        };
        match kind {
            0 => {
                self.n += 1;
                let (code, _) = load::login_to_code(conn, &self.target, self.n).await?;
                let tokens = load::exchange_code(conn, &self.target, &code).await?;
                self.access = Some(tokens.access);
                self.refresh = Some(tokens.refresh.ok_or("no refresh token")?);
            }
            1 => {
                let token = self.refresh.take().unwrap_or_default();
                let tokens = load::refresh(conn, &self.target, &token).await?;
                self.access = Some(tokens.access);
                self.refresh = Some(tokens.refresh.ok_or("no rotated refresh token")?);
            }
            2 => {
                let bearer = format!("Bearer {}", self.access.as_deref().unwrap_or_default());
                let reply = conn
                    .send(Method::GET, &self.userinfo_path, None, Some(&bearer), None)
                    .await?;
                if !reply.status.is_success() {
                    return Err(format!("userinfo: {}", reply.describe()).into());
                }
            }
            _ => {
                let path = if kind == 3 {
                    &self.discovery_path
                } else {
                    &self.keys_path
                };
                let reply = conn.get(path).await?;
                if !reply.status.is_success() {
                    return Err(format!("{path}: {}", reply.describe()).into());
                }
            }
        }
        Ok(kind)
    }
}

/// Runs the soak for `secs` against a fresh oxidex started from `oxidex`.
pub async fn run(
    oxidex: &Path,
    work: &Path,
    secs: f64,
    context: Vec<String>,
) -> Result<SoakReport, Error> {
    let dir = work.join("oxidex-soak");
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let config = dir.join("config.json");
    let storage = serde_json::json!({"type": "sqlite3", "config": {"file": dir.join("oxidex.db")}});
    crate::write_json(&config, &crate::oxidex_config(addr, storage, "RS256"))?;
    let mut cmd = Command::new(oxidex);
    cmd.arg("serve").arg(&config);
    let server =
        Server::start("oxidex", cmd, addr, "/dex/healthz", &dir.join("oxidex.log")).await?;

    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WORKERS.min(crate::REFRESH_CLIENTS) {
        let mut target = Target::new(addr, "/dex", "/auth", "/token");
        target.client_id = format!("refresh-{w}");
        let mut worker = Worker {
            target: Arc::new(target),
            userinfo_path: "/dex/userinfo".into(),
            discovery_path: "/dex/.well-known/openid-configuration".into(),
            keys_path: "/dex/keys".into(),
            n: (w as u64) << 40,
            access: None,
            refresh: None,
        };
        let (window, stop) = (window.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            // Workers start at different kinds, so the mix is even from the start.
            let mut step = w;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let result = worker.op(&mut conn, step % KINDS.len()).await;
                let elapsed = began.elapsed();
                let failed = {
                    let mut window = lock(&window);
                    match result {
                        Ok(kind) => {
                            window.latencies[kind].push(elapsed);
                            false
                        }
                        Err(error) => {
                            window.errors += 1;
                            if window.first_errors.len() < KEPT_ERRORS {
                                window.first_errors.push(error.to_string());
                            }
                            true
                        }
                    }
                };
                if failed {
                    conn = Conn::new(addr);
                    // A dead server refuses at once: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                step += 1;
            }
        }));
    }

    let started = Instant::now();
    let total = Duration::from_secs_f64(secs);
    let mut samples = Vec::new();
    let mut first_errors = Vec::new();
    let mut take_sample = |samples: &mut Vec<Sample>| {
        let taken = std::mem::take(&mut *lock(&window));
        let t = started.elapsed().as_secs_f64();
        let sample = Sample {
            t,
            rss_mb: server.rss_mb(),
            p99_ms: taken.latencies.each_ref().map(|l| p99_ms(l)),
            ops: taken.latencies.each_ref().map(|l| l.len() as u64),
            errors: taken.errors,
        };
        for e in taken.first_errors {
            if first_errors.len() < KEPT_ERRORS {
                first_errors.push(e);
            }
        }
        crate::progress(&format!(
            "  soak {t:.0} s: RSS {:.1} MB, {} operations, {} errors, p99 ms {}",
            sample.rss_mb,
            sample.ops.iter().sum::<u64>(),
            sample.errors,
            KINDS
                .iter()
                .zip(sample.p99_ms)
                .map(|(k, p)| format!("{k} {}", num(p)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        samples.push(sample);
    };
    let mut next = SAMPLE_EVERY;
    while next <= total {
        tokio::time::sleep_until((started + next).into()).await;
        take_sample(&mut samples);
        next += SAMPLE_EVERY;
    }
    tokio::time::sleep_until((started + total).into()).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        if let Err(e) = task.await {
            lock(&window).errors += 1;
            crate::progress(&format!("  soak worker failed: {e}"));
        }
    }
    // The operations in flight at the end count in the last sample (their errors too);
    // a sample of a second or less would only add a noisy p99.
    let rest = std::mem::take(&mut *lock(&window));
    match samples.last_mut() {
        Some(last) => {
            last.errors += rest.errors;
            for (ops, done) in last.ops.iter_mut().zip(&rest.latencies) {
                *ops += done.len() as u64;
            }
            first_errors.extend(rest.first_errors);
            first_errors.truncate(KEPT_ERRORS);
        }
        None => take_sample(&mut samples),
    }
    server.stop();
    Ok(SoakReport {
        secs,
        context,
        samples,
        first_errors,
    })
}

fn p99_ms(latencies: &[Duration]) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let i = (sorted.len() * 99 / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

/// The RSS rule's figures: the sample at the first minute, the highest later one.
struct RssCheck {
    baseline: Sample,
    peak: Sample,
}

impl RssCheck {
    fn growth(&self) -> f64 {
        self.peak.rss_mb - self.baseline.rss_mb
    }
}

impl SoakReport {
    fn errors(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }

    /// `None` when no sample came after the first minute (a soak shorter than ~70 s).
    fn rss_check(&self) -> Option<RssCheck> {
        let at = self.samples.iter().position(|s| s.t >= BASELINE_AT_SECS)?;
        let baseline = self.samples[at].clone();
        let peak = self.samples[at + 1..]
            .iter()
            .max_by(|a, b| a.rss_mb.total_cmp(&b.rss_mb))?
            .clone();
        Some(RssCheck { baseline, peak })
    }

    /// Why the soak failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let errors = self.errors();
        if errors > 0 {
            failures.push(format!("{errors} requests failed"));
        }
        if self.samples.is_empty() {
            failures.push("no sample taken".into());
        }
        if let Some(check) = self.rss_check()
            && (check.growth().is_nan() || check.growth() > RSS_TOLERANCE_MB)
        {
            failures.push(format!(
                "RSS grew {} MB after the first minute ({} → {} MB at {} s), more than {RSS_TOLERANCE_MB} MB",
                num(check.growth()),
                num(check.baseline.rss_mb),
                num(check.peak.rss_mb),
                num(check.peak.t)
            ));
        }
        failures
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        for line in &self.context {
            md.push_str(line);
            md.push('\n');
        }
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            "PASSED".to_owned()
        } else {
            format!("FAILED: {}", failures.join("; "))
        };
        md.push_str(&format!(
            "\nSoak: {} s, {WORKERS} workers (one keep-alive connection and one client each) cycling through \
             a login flow ending in a code exchange, a refresh grant, userinfo, discovery and `/keys`; \
             oxidex RS256 on SQLite, nobody scraping `/metrics`. Sampled every {} s; p99 per kind of \
             operation (a login flow is one operation). The run fails on any request error or on RSS \
             growth after the first minute above {RSS_TOLERANCE_MB} MB.\n\n**{verdict}**\n\n",
            num(self.secs),
            SAMPLE_EVERY.as_secs()
        ));
        let elapsed = self.samples.last().map_or(f64::NAN, |s| s.t);
        md.push_str("| figure | value |\n|---|---|\n");
        for (k, kind) in KINDS.iter().enumerate() {
            let ops: u64 = self.samples.iter().map(|s| s.ops[k]).sum();
            let worst = self
                .samples
                .iter()
                .map(|s| s.p99_ms[k])
                .filter(|p| p.is_finite())
                .fold(f64::NAN, f64::max);
            md.push_str(&format!(
                "| {kind} | {ops} ({}/s), worst 10-s p99 {} ms |\n",
                num(ops as f64 / elapsed),
                num(worst)
            ));
        }
        md.push_str(&format!("| request errors | {} |\n", self.errors()));
        match self.rss_check() {
            Some(check) => md.push_str(&format!(
                "| RSS at the first minute ({} s) | {} MB |\n\
                 | highest RSS after it | {} MB at {} s |\n\
                 | growth after the first minute | {} MB (tolerance {RSS_TOLERANCE_MB} MB) |\n",
                num(check.baseline.t),
                num(check.baseline.rss_mb),
                num(check.peak.rss_mb),
                num(check.peak.t),
                num(check.growth())
            )),
            None => md.push_str(
                "| RSS growth after the first minute | not judged: no sample after the first minute |\n",
            ),
        }
        md.push_str(&format!(
            "\n| t (s) | RSS (MB) | operations | errors | {} |\n|---|---|---|---|{}\n",
            KINDS
                .iter()
                .map(|k| format!("p99 {k} (ms)"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(KINDS.len())
        ));
        for s in &self.samples {
            md.push_str(&format!(
                "| {:.0} | {} | {} | {} | {} |\n",
                s.t,
                num(s.rss_mb),
                s.ops.iter().sum::<u64>(),
                s.errors,
                s.p99_ms.map(num).join(" | ")
            ));
        }
        if !self.first_errors.is_empty() {
            md.push_str("\nFirst errors:\n");
            for e in &self.first_errors {
                md.push_str(&format!("- {e}\n"));
            }
        }
        md
    }

    /// Two panels over time: RSS (with the tolerance line from the first-minute sample)
    /// and the p99 latency of each kind on a log scale.
    pub fn svg(&self) -> String {
        const W: f64 = 900.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 170.0;
        const PANEL: f64 = 220.0;
        const TOP1: f64 = 50.0;
        const TOP2: f64 = TOP1 + PANEL + 60.0;
        const H: f64 = TOP2 + PANEL + 50.0;
        const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
        let plot_w = W - LEFT - RIGHT;
        let t_max = self
            .samples
            .last()
            .map_or(self.secs, |s| s.t)
            .max(self.secs)
            .max(10.0);
        let x = |t: f64| LEFT + t / t_max * plot_w;
        let mut out = String::new();
        out.push_str(&format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        ));
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            "passed"
        } else {
            "FAILED"
        };
        out.push_str(&format!(
            "<text x=\"{LEFT}\" y=\"24\" font-size=\"15\">oxidex soak: {:.0} s, {WORKERS} workers, {verdict}</text>\n",
            self.secs
        ));

        // Time axis ticks, shared by both panels.
        let step = nice_step(t_max / 8.0);
        let mut ticks = Vec::new();
        let mut t = 0.0;
        while t <= t_max + 1e-9 {
            ticks.push(t);
            t += step;
        }
        let frame = |out: &mut String, top: f64, label: &str| {
            out.push_str(&format!(
                "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#444\"/>\n\
                 <text x=\"{LEFT}\" y=\"{}\">{label}</text>\n",
                top - 8.0
            ));
            for &t in &ticks {
                out.push_str(&format!(
                    "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\n\
                     <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>\n",
                    x(t),
                    top + PANEL,
                    top + PANEL + 16.0,
                    tick(t)
                ));
            }
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (s)</text>\n",
                LEFT + plot_w / 2.0,
                top + PANEL + 34.0
            ));
        };

        // RSS panel.
        frame(&mut out, TOP1, "RSS (MB)");
        let check = self.rss_check();
        let rss: Vec<f64> = self
            .samples
            .iter()
            .map(|s| s.rss_mb)
            .filter(|r| r.is_finite())
            .collect();
        let mut hi = rss.iter().copied().fold(f64::NAN, f64::max);
        if let Some(c) = &check {
            hi = hi.max(c.baseline.rss_mb + RSS_TOLERANCE_MB);
        }
        let hi = if hi.is_finite() { hi * 1.1 } else { 10.0 };
        let rss_step = nice_step(hi / 5.0);
        let y1 = |mb: f64| TOP1 + PANEL - mb / hi * PANEL;
        let mut mb = 0.0;
        while mb <= hi {
            out.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\n\
                 <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>\n",
                LEFT + plot_w,
                y1(mb),
                LEFT - 6.0,
                y1(mb) + 4.0,
                tick(mb)
            ));
            mb += rss_step;
        }
        if let Some(c) = &check {
            let limit = c.baseline.rss_mb + RSS_TOLERANCE_MB;
            out.push_str(&format!(
                "<line x1=\"{0:.1}\" x2=\"{1:.1}\" y1=\"{2:.1}\" y2=\"{2:.1}\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\n\
                 <text x=\"{3:.1}\" y=\"{4:.1}\" fill=\"#d62728\">limit {5} MB</text>\n",
                x(c.baseline.t),
                LEFT + plot_w,
                y1(limit),
                LEFT + plot_w + 6.0,
                y1(limit) + 4.0,
                num(limit)
            ));
        }
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.rss_mb.is_finite())
            .map(|s| (x(s.t), y1(s.rss_mb)))
            .collect();
        polyline(&mut out, &points, COLORS[0]);
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">oxidex RSS</text>\n",
            LEFT + plot_w + 6.0,
            TOP1 + PANEL - 4.0,
            COLORS[0]
        ));

        // p99 panel, log scale over whole decades.
        frame(&mut out, TOP2, "p99 latency per 10 s (ms, log scale)");
        let p99s: Vec<f64> = self
            .samples
            .iter()
            .flat_map(|s| s.p99_ms)
            .filter(|p| p.is_finite() && *p > 0.0)
            .collect();
        let lo_dec = p99s
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor();
        let hi_dec = p99s
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .log10()
            .ceil();
        let (lo_dec, hi_dec) = if lo_dec.is_finite() && hi_dec.is_finite() {
            (lo_dec, hi_dec.max(lo_dec + 1.0))
        } else {
            (-1.0, 2.0)
        };
        let y2 = |ms: f64| TOP2 + PANEL - (ms.log10() - lo_dec) / (hi_dec - lo_dec) * PANEL;
        let mut dec = lo_dec;
        while dec <= hi_dec {
            let ms = 10f64.powf(dec);
            out.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\n\
                 <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>\n",
                LEFT + plot_w,
                y2(ms),
                LEFT - 6.0,
                y2(ms) + 4.0,
                tick(ms)
            ));
            dec += 1.0;
        }
        for (k, kind) in KINDS.iter().enumerate() {
            let points: Vec<(f64, f64)> = self
                .samples
                .iter()
                .filter(|s| s.p99_ms[k].is_finite() && s.p99_ms[k] > 0.0)
                .map(|s| (x(s.t), y2(s.p99_ms[k])))
                .collect();
            polyline(&mut out, &points, COLORS[k]);
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{kind}</text>\n",
                LEFT + plot_w + 6.0,
                TOP2 + 14.0 + 16.0 * k as f64,
                COLORS[k]
            ));
        }
        out.push_str("</svg>\n");
        out
    }
}

fn polyline(out: &mut String, points: &[(f64, f64)], color: &str) {
    if points.is_empty() {
        return;
    }
    let list: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    out.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
        list.join(" ")
    ));
    for (x, y) in points {
        out.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{color}\"/>\n"
        ));
    }
}

/// An axis label: whole numbers without decimals (`10`, `1,000`), others as they are.
fn tick(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() >= 1.0 {
        num(x).replace(".00", "").replace(".0", "")
    } else {
        format!("{}", (x * 1e6).round() / 1e6)
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rss_mb: f64, errors: u64) -> Sample {
        Sample {
            t,
            rss_mb,
            p99_ms: [40.0, 3.0, 1.0, 0.5, f64::NAN],
            ops: [100, 100, 100, 100, 0],
            errors,
        }
    }

    fn report(samples: Vec<Sample>) -> SoakReport {
        SoakReport {
            secs: samples.last().map_or(0.0, |s| s.t),
            context: Vec::new(),
            samples,
            first_errors: Vec::new(),
        }
    }

    #[test]
    fn rss_growth_after_the_first_minute_fails_the_soak() {
        let steady: Vec<Sample> = (1..=12)
            .map(|i| sample(i as f64 * 10.0, 30.0 + i as f64 * 0.2, 0))
            .collect();
        assert!(report(steady.clone()).failures().is_empty());

        // Growth during the first minute is warm-up, not judged.
        let mut warm = steady.clone();
        warm[0].rss_mb = 5.0;
        assert!(report(warm).failures().is_empty());

        // A later peak counts even if RSS falls back by the end.
        let mut peak = steady;
        peak[8].rss_mb = 31.2 + RSS_TOLERANCE_MB + 0.5;
        let failures = report(peak).failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("RSS grew"));
    }

    #[test]
    fn any_request_error_fails_the_soak() {
        let mut samples: Vec<Sample> = (1..=3).map(|i| sample(i as f64 * 10.0, 30.0, 0)).collect();
        assert!(report(samples.clone()).failures().is_empty());
        samples[1].errors = 1;
        assert_eq!(report(samples).failures(), vec!["1 requests failed"]);
    }

    #[test]
    fn a_short_soak_is_not_judged_on_rss_and_an_empty_one_fails() {
        let short = report(vec![sample(10.0, 30.0, 0), sample(20.0, 90.0, 0)]);
        assert!(short.failures().is_empty());
        assert!(short.markdown().contains("not judged"));
        assert_eq!(report(Vec::new()).failures(), vec!["no sample taken"]);
    }

    #[test]
    fn the_plot_is_one_svg_document_with_both_panels() {
        let samples: Vec<Sample> = (1..=8)
            .map(|i| sample(i as f64 * 10.0, 30.0 + i as f64, 0))
            .collect();
        let svg = report(samples).svg();
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            1 + 4,
            "RSS and 4 kinds with data"
        );
        assert!(svg.contains("limit"));
        assert!(!svg.contains("NaN"));
        let empty = report(Vec::new()).svg();
        assert_eq!(empty.matches("<polyline").count(), 0);
        assert!(!empty.contains("NaN") && !empty.contains("=\"inf") && !empty.contains("=\"-inf"));
    }

    #[test]
    fn ticks_read_well() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(1000.0), "1,000");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(2.5), "2.5");
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(60.0), 100.0);
        assert_eq!(nice_step(12.0), 20.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }
}
