//! Starting the servers under test, timing them to ready, reading their RSS, and wrk.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Conn, Error};

/// A free loopback port (bound, then released for the server to take).
pub fn free_addr() -> Result<SocketAddr, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A server process, killed when dropped.
pub struct Server {
    pub name: String,
    child: Child,
    pub addr: SocketAddr,
    /// Spawn → first 200 from the health path.
    pub ready: Duration,
}

impl Server {
    /// Spawns `command` (output to `log`) and polls `health` on `addr` every millisecond.
    pub async fn start(
        name: &str,
        mut command: Command,
        addr: SocketAddr,
        health: &str,
        log: &Path,
    ) -> Result<Self, Error> {
        let out = File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("{name}: cannot start {command:?}: {e}"))?;
        let mut server = Self {
            name: name.to_owned(),
            child,
            addr,
            ready: Duration::ZERO,
        };
        loop {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{name} not ready in 30 s; log: {}", tail(log)).into());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name} exited ({status}); log: {}", tail(log)).into());
            }
            let mut conn = Conn::new(addr);
            if let Ok(reply) = conn.get(health).await
                && reply.status.is_success()
            {
                server.ready = started.elapsed();
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in MB, from /proc.
    pub fn rss_mb(&self) -> f64 {
        rss_kb(self.pid()).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
    }

    /// CPU time (user + system) the server has used so far, in seconds, from /proc.
    pub fn cpu_secs(&self) -> f64 {
        // /proc counts in USER_HZ, which the kernel's ABI fixes at 100 per second.
        cpu_ticks(self.pid()).map_or(f64::NAN, |ticks| ticks as f64 / 100.0)
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of `pid` (fields 14 and 15 of /proc/<pid>/stat, after the
/// parenthesised command name, which may itself contain spaces).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bad: u64,
}

/// `wrk -t2 -c64 -d<secs>s --latency URL`, keep-alive.
pub async fn wrk(url: &str, secs: f64) -> Result<WrkResult, Error> {
    let duration = format!("-d{}s", secs.ceil().max(1.0) as u64);
    let run = tokio::process::Command::new("wrk")
        .args(["-t2", "-c64", &duration, "--latency", url])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs_f64(secs + 30.0), run)
        .await
        .map_err(|_| format!("wrk {url} did not finish"))??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}").into())
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let rps = field("Requests/sec:")?.parse().ok()?;
    let p50_ms = duration_ms(field("50%")?)?;
    let p99_ms = duration_ms(field("99%")?)?;
    let bad = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Non-2xx or 3xx responses:"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(WrkResult {
        rps,
        p50_ms,
        p99_ms,
        bad,
    })
}

fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1e3,
        "ms" => value,
        "s" => value * 1e3,
        "m" => value * 60e3,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  Latency Distribution\n     50%  593.00us\n     75%    1.02ms\n     90%    2.10ms\n     99%    5.31ms\n  57623 requests in 1.00s, 7.09MB read\n  Non-2xx or 3xx responses: 12\nRequests/sec:  57458.87\nTransfer/sec:      7.07MB\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.rps, 57458.87);
        assert!((r.p50_ms - 0.593).abs() < 1e-9);
        assert!((r.p99_ms - 5.31).abs() < 1e-9);
        assert_eq!(r.bad, 12);
    }
}
