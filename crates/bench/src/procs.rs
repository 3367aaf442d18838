//! The processes a run starts: release binaries with their own environment, log file and
//! ports; readiness through their HTTP endpoints; peak RSS from /proc; SIGTERM to stop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long a process has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM grace period before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running binary. Killed (SIGKILL) if dropped without [`Proc::stop`], so a failed run
/// leaves nothing behind.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// An address on loopback that was free a moment ago.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?)
}

impl Proc {
    /// Starts `bin_dir/binary args…` with `env` added to this process's environment; output
    /// goes to `log_dir/name.log`.
    pub fn spawn(
        bin_dir: &Path,
        binary: &str,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let path = bin_dir.join(binary);
        if !path.is_file() {
            bail!("{} not found: build it with `cargo build --release -p {binary}` (make bench does)", path.display());
        }
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let pid = child.id().context("the child has no pid")?;
        Ok(Self { name: name.to_owned(), child, pid, log })
    }

    /// Runs a one-shot command (e.g. `sender migrate`) to completion.
    pub async fn run_to_end(
        bin_dir: &Path,
        binary: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<()> {
        let name = format!("{binary}-{}", args.join("-"));
        let mut proc = Self::spawn(bin_dir, binary, &name, args, env, log_dir)?;
        let status = tokio::time::timeout(READY_TIMEOUT, proc.child.wait()).await.context("timed out")??;
        if !status.success() {
            bail!("`{binary} {}` failed ({status}):\n{}", args.join(" "), proc.log_tail());
        }
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- {} (last lines of {}) ---\n{tail}", self.name, self.log.display())
    }

    /// An error if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// Waits until `url` answers 2xx, failing early if the process exits.
    pub async fn wait_ready(&mut self, http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} not ready at {url} within {READY_TIMEOUT:?}\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident set size (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    async fn reap(&mut self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, self.child.wait()).await.is_err() {
            eprintln!("{} did not stop within {STOP_TIMEOUT:?} of SIGTERM: SIGKILL", self.name);
            let _ = self.child.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(self) {
        stop_all(vec![self]).await;
    }
}

/// SIGTERM to every process at once, then SIGKILL to those still running after the grace
/// period.
pub async fn stop_all(mut procs: Vec<Proc>) {
    for proc in procs.iter_mut().rev() {
        proc.terminate();
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for proc in procs.iter_mut().rev() {
        proc.reap(deadline).await;
    }
}
