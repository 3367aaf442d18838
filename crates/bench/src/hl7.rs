//! HL7 v2 SIU through ingest's MLLP listener: each connection sends a message, waits for its
//! ACK (sent by ingest only after RabbitMQ confirmed the events), then sends the next, as an
//! interface engine does.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use careline_hl7::mllp::{Decoder, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fixtures::{Db, Env, Number, delete_queues, fresh_prefix, write_network};
use crate::procs::{Proc, free_addr};

/// How long one ACK may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages per second over 1 and over 8 connections.
#[derive(Debug, Clone, Copy)]
pub struct Hl7Rates {
    pub one: f64,
    pub eight: f64,
}

/// A new booking as an Epic-style engine sends it (same shape as ingest's tests).
fn siu(control_id: &str, facility: &str, appointment: &str, patient: u64, start: &str) -> String {
    [
        format!("MSH|^~\\&|EPIC|BENCH|CARELINE|CARELINE|20261120091500||SIU^S12^SIU_S12|{control_id}|P|2.5.1"),
        format!(
            "SCH|PL-{appointment}^EPIC|{appointment}^EPIC|||||FOLLOWUP^Follow-up^HL70276||20|min|^^20^{start}||||||||||||||Booked"
        ),
        "NTE|1||Bring previous reports".to_owned(),
        format!(
            "PID|1||99^^^GOV^NI~B-{patient}^^^BENCH^MR||Sharma^Asha^^^^^L||19850412|F|||12 MG Road^^Bengaluru||^PRN^PH^^91^80^41234567~^PRN^CP^^91^97{patient:08}||HIN^Hindi"
        ),
        "RGS|1|A".to_owned(),
        format!("AIS|1|A|CARD^Cardiology \\T\\ Vascular^L|{start}|||20|min"),
        format!("AIL|1|A|{facility}^Room 4"),
        "AIP|1|A|1001^Rao^Priya^^^Dr|ATTENDING".to_owned(),
        String::new(),
    ]
    .join("\r")
}

/// MSA-1 of an ACK.
fn ack_code(ack: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(ack);
    let msa = text.split(['\r', '\n']).find(|s| s.starts_with("MSA|"))?;
    msa.split('|').nth(1).map(str::to_owned)
}

/// Sends `count` messages on one connection; returns how many were answered AA.
async fn connection(addr: std::net::SocketAddr, conn: usize, count: usize, facility: String) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(addr).await.context("connect to the MLLP listener")?;
    stream.set_nodelay(true)?;
    let mut decoder = Decoder::new(1024 * 1024);
    let mut buf = vec![0u8; 8192];
    let start = (chrono::Utc::now() + chrono::Duration::days(3)).format("%Y%m%d%H%M").to_string();
    let mut accepted = 0;
    for i in 0..count {
        let n = (conn * 1_000_000 + i) as u64;
        let message = siu(&format!("B{conn}-{i}"), &facility, &format!("H{conn}-{i}"), n, &start);
        stream.write_all(&frame(message.as_bytes())).await?;
        let ack = loop {
            if let Some(frame) = decoder.next_frame() {
                break frame?;
            }
            let read = tokio::time::timeout(ACK_TIMEOUT, stream.read(&mut buf)).await.context("no ACK in time")??;
            if read == 0 {
                bail!("ingest closed the MLLP connection");
            }
            decoder.feed(&buf[..read]);
        };
        match ack_code(&ack).as_deref() {
            Some("AA" | "CA") => accepted += 1,
            other => {
                if accepted == 0 && i == 0 {
                    bail!("first SIU answered {other:?}: {}", String::from_utf8_lossy(&ack));
                }
            }
        }
    }
    Ok(accepted)
}

/// Messages per second over `connections`, each numbered from `first_id` so that control
/// ids and appointments never repeat within a run.
async fn rate(
    addr: std::net::SocketAddr,
    connections: usize,
    messages: usize,
    facility: &str,
    first_id: usize,
) -> anyhow::Result<f64> {
    let per = messages.div_ceil(connections);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        tasks.spawn(connection(addr, first_id + c, per, facility.to_owned()));
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        accepted += done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if accepted < per * connections {
        bail!("only {accepted} of {} SIU messages were answered AA", per * connections);
    }
    Ok(accepted as f64 / elapsed)
}

pub async fn measure(env: &Env, messages: usize) -> anyhow::Result<Hl7Rates> {
    let dir = env.scenario_dir("hl7")?;
    let prefix = fresh_prefix();
    let db = Db::create(env, &dir).await?;
    let result = async {
        let number = Number::nth(0, 80);
        let config = write_network(&dir, std::slice::from_ref(&number))?;
        let (admin, api, mllp) = (free_addr()?, free_addr()?, free_addr()?);
        let mut vars = env.common_env(&db, &prefix);
        vars.extend([
            ("CARELINE_CONFIG".to_owned(), config.display().to_string()),
            ("ADMIN_LISTEN_ADDR".to_owned(), admin.to_string()),
            ("INGEST_LISTEN_ADDR".to_owned(), api.to_string()),
            ("INGEST_MLLP_LISTEN_ADDR".to_owned(), mllp.to_string()),
        ]);
        let mut ingest = Proc::spawn(&env.bin_dir, "ingest", "ingest", &[], &vars, &dir)?;
        let measured = async {
            ingest.wait_ready(&env.http, &format!("http://{admin}/readyz")).await?;
            // A short warm-up so connection set-up and the first declarations are not timed.
            rate(mllp, 1, 20, &number.facility(), 0).await?;
            let one = rate(mllp, 1, messages, &number.facility(), 1).await?;
            let eight = rate(mllp, 8, messages, &number.facility(), 2).await?;
            Ok::<_, anyhow::Error>(Hl7Rates { one, eight })
        }
        .await;
        ingest.stop().await;
        measured
    }
    .await;
    db.drop_unless(env.keep).await;
    delete_queues(env, &prefix).await;
    result.with_context(|| format!("HL7 (logs in {})", dir.display()))
}
