//! Running the service binary as a user runs it, for the end-to-end tests.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_user-invite");

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// One run of the binary, its output in a log file.
pub struct Service {
    pub child: Child,
    pub base: String,
    log: PathBuf,
}

impl Service {
    pub fn start(run: &str, env: &[(&str, String)], port: u16) -> Self {
        let log =
            std::env::temp_dir().join(format!("user-invite-{run}-{}.log", std::process::id()));
        let out = File::create(&log).expect("create the log file");
        let child = Command::new(BINARY)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(out.try_clone().expect("clone the log file"))
            .stderr(out)
            .spawn()
            .expect("start the user-invite binary");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Everything the service printed so far (standard output and error).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                panic!("the service exited early ({status}):\n{}", self.log_tail());
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the service did not become ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stats(&self, http: &reqwest::Client) -> Value {
        http.get(format!("{}/outbox/stats", self.base))
            .send()
            .await
            .expect("GET /outbox/stats")
            .json()
            .await
            .expect("stats JSON")
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not exit in {within:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
