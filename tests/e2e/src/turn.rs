//! A TURN server (coturn's `turnserver`) on the loopback, for agents whose
//! browser may only reach the gateway through a relay. It takes the TURN
//! REST credentials the gateway hands out (`use-auth-secret`), relays to
//! loopback peers (the gateway listens there in the tests) and keeps no
//! state on disk beyond the test's directory.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::env;
use crate::ports::{free_udp_and_tcp_port, free_udp_range, LOCALHOST};
use crate::process::Process;
use crate::{eventually, TestContext};

/// Relay ports each server may use.
const RELAY_PORTS: u16 = 40;

/// A running `turnserver`.
pub struct TurnServer {
    process: Process,
    addr: SocketAddr,
}

impl TurnServer {
    /// Starts coturn with `secret` as its REST credentials' shared secret and
    /// waits until it accepts connections.
    pub async fn start(ctx: &TestContext, secret: &str) -> anyhow::Result<Self> {
        let bin = env::required_program(env::TURNSERVER_BIN)?;
        let port = free_udp_and_tcp_port()?;
        let relay = free_udp_range(LOCALHOST.into(), RELAY_PORTS)?;
        let dir = ctx.subdir("turn")?;
        let mut command = Command::new(bin);
        command
            .arg("-n")
            .arg("--no-cli")
            .arg("--no-tls")
            .arg("--no-dtls")
            .arg(format!("--listening-ip={LOCALHOST}"))
            .arg(format!("--relay-ip={LOCALHOST}"))
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay}"))
            .arg(format!("--max-port={}", relay + RELAY_PORTS - 1))
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--realm=switchboard.test")
            // The gateway under test listens on the loopback.
            .arg("--allow-loopback-peers")
            .arg("--fingerprint")
            .arg("--log-file=stdout")
            .arg("--simple-log")
            .arg(format!("--pidfile={}", dir.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()));
        let mut process = Process::spawn(ctx, "turnserver", command)?;
        let addr = SocketAddr::from((LOCALHOST, port));
        eventually(&format!("turnserver to listen on {addr}"), Duration::from_secs(15), || {
            let alive = process.ensure_running();
            async move {
                alive?;
                Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()))
            }
        })
        .await
        .context("starting coturn")?;
        Ok(Self { process, addr })
    }

    /// The `turn:` URL browsers use (UDP).
    pub fn url(&self) -> String {
        format!("turn:{}?transport=udp", self.addr)
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}
