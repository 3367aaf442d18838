//! HL7 v2 SIU over MLLP against real PostgreSQL and RabbitMQ: a fresh database and a fresh
//! AMQP prefix per test, a real TCP (or TLS) connection framed as an interface engine frames
//! it, and a test queue bound to the events exchange to see exactly what was published.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use careline_bus::{BusSettings, Topology};
use careline_domain::events::{AppointmentStatus, AppointmentUpserted, Envelope, Event, PatientUpserted};
use careline_hl7::Message;
use careline_hl7::mllp::{self, Decoder};
use careline_store::testing::{database_url, fresh_database};
use ingest::mllp::{MllpSettings, TlsFiles};
use ingest::{Application, Settings};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NETWORK: &str = r#"
    [templates.booking_confirmation]
    name = "appointment_booked"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]
    [templates.reminder]
    name = "appointment_reminder"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]

    [[facility]]
    id = "city"
    name = "City General"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"

    [[facility]]
    id = "north"
    name = "North Clinic"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1002"
"#;

/// How long a test waits for anything (an ACK, an event, a closed connection).
const PATIENCE: Duration = Duration::from_secs(10);

struct TestApp {
    mllp: SocketAddr,
    admin: SocketAddr,
    channel: lapin::Channel,
    events_queue: String,
    _connection: lapin::Connection,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Default)]
struct Options {
    amqp_url: Option<String>,
    mllp: MllpSettings,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

async fn spawn_app_with(options: Options) -> TestApp {
    let (_pool, url) = fresh_database(&database_url()).await;
    let bus = BusSettings::for_test();
    let config_path = std::env::temp_dir().join(format!("careline-ingest-hl7-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config_path, NETWORK).expect("write facilities file");

    let connection = lapin::Connection::connect(&bus.url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let topology = Topology::new(&bus.prefix);
    topology.declare(&channel, bus.queue_expires_ms).await.expect("declare topology");
    // A queue of the test's own that sees every event, whatever the services bind.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare the test queue");
    let events_queue = queue.name().to_string();
    channel
        .queue_bind(
            events_queue.clone().into(),
            topology.events_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the test queue");

    let mut app_bus = bus.clone();
    let broker_overridden = options.amqp_url.is_some();
    if let Some(amqp_url) = options.amqp_url {
        app_bus.url = amqp_url;
    }
    let settings = Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: url,
        database_max_connections: 2,
        bus: app_bus,
        config_path,
        max_body_bytes: 65_536,
        publish_timeout: Duration::from_secs(5),
        token_cache_ttl: Duration::from_secs(10),
        migrate_on_start: false,
        mllp: MllpSettings { listen_addr: Some("127.0.0.1:0".parse().unwrap()), ..options.mllp },
    };
    let app = Application::build(settings).await.expect("build ingest");
    let mllp = app.mllp_addr().expect("the MLLP listener is on");
    let admin = app.admin_addr();
    let shutdown = CancellationToken::new();
    let running = Some(tokio::spawn(app.run_until_stopped(shutdown.clone())));
    let app = TestApp { mllp, admin, channel, events_queue, _connection: connection, shutdown, running };
    if !broker_overridden {
        app.wait_until_ready().await;
    }
    app
}

impl TestApp {
    /// Waits for `/readyz`, as an orchestrator would before routing traffic: on a busy machine
    /// the first broker connection (declaring quorum queues) can outlast a publish timeout.
    async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = reqwest::get(format!("http://{}/readyz", self.admin)).await.map(|r| r.status() == 200);
            if matches!(ready, Ok(true)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "ingest never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect(&self) -> MllpClient<TcpStream> {
        MllpClient::new(TcpStream::connect(self.mllp).await.expect("connect to the MLLP listener"))
    }

    /// The next event published to the events exchange, waiting up to [`PATIENCE`].
    async fn next_event(&self) -> Envelope {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self
                .channel
                .basic_get(self.events_queue.clone().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get");
            if let Some(message) = got {
                return serde_json::from_slice(&message.delivery.data).expect("an envelope");
            }
            assert!(tokio::time::Instant::now() < deadline, "no event arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn next_patient(&self) -> PatientUpserted {
        match self.next_event().await.event {
            Event::PatientUpserted(p) => p,
            other => panic!("expected patient_upserted, got {other:?}"),
        }
    }

    async fn next_appointment(&self) -> AppointmentUpserted {
        match self.next_event().await.event {
            Event::AppointmentUpserted(a) => a,
            other => panic!("expected appointment_upserted, got {other:?}"),
        }
    }

    /// Nothing was published. Checked right after an ACK: ingest answers only after the
    /// broker confirmed, so anything published would already be in the queue.
    async fn nothing_published(&self) -> bool {
        self.channel
            .basic_get(self.events_queue.clone().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
            .is_none()
    }
}

/// An interface engine's side of an MLLP connection.
struct MllpClient<S> {
    stream: S,
    decoder: Decoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MllpClient<S> {
    fn new(stream: S) -> Self {
        Self { stream, decoder: Decoder::new(1024 * 1024) }
    }

    async fn send(&mut self, message: &str) -> Reply {
        self.send_raw(&mllp::frame(message.as_bytes())).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Reply {
        self.stream.write_all(bytes).await.expect("write");
        self.reply().await.expect("an ACK before the connection closed")
    }

    /// The next ACK, or `None` when the server closed the connection.
    async fn reply(&mut self) -> Option<Reply> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Some(Reply::parse(&frame.expect("ACKs are small")));
            }
            let read = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf)).await.expect("no answer in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }
}

/// An ACK as the interface engine reads it.
#[derive(Debug)]
struct Reply {
    text: String,
    /// MSA-1
    code: String,
    /// MSA-2
    acknowledges: String,
    /// MSH-3..6 of the ACK.
    header: [String; 4],
    /// ERR-2 location and ERR-3 code of each ERR, e.g. ("SCH^1^11^^4", "102").
    errors: Vec<(String, String, String)>,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Self {
        let message = Message::parse(bytes).expect("the ACK is HL7");
        let msh = message.header();
        let msa = message.segment("MSA").expect("MSA");
        assert_eq!(msh.field(9).component(1).as_deref(), Some("ACK"));
        Self {
            text: String::from_utf8_lossy(bytes).into_owned(),
            code: msa.field(1).value().unwrap_or_default(),
            acknowledges: msa.field(2).value().unwrap_or_default(),
            header: [3, 4, 5, 6].map(|n| msh.field(n).raw().to_owned()),
            errors: message
                .segments_named("ERR")
                .map(|e| {
                    (
                        e.field(2).raw().to_owned(),
                        e.field(3).value().unwrap_or_default(),
                        e.field(4).value().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    fn error_codes(&self) -> Vec<&str> {
        self.errors.iter().filter(|(_, _, severity)| severity == "E").map(|(_, code, _)| code.as_str()).collect()
    }
}

/// An SIU message as an Epic-style engine sends it: repeated identifiers and names, an
/// escaped department, NTE/RGS segments, a Z-segment. Times are local (Asia/Kolkata).
fn siu(trigger: &str, control_id: &str, sent_at: &str, facility: &str, appointment: &str, start: &str) -> String {
    [
        format!("MSH|^~\\&|EPIC|CITYGEN|CARELINE|CARELINE|{sent_at}||SIU^{trigger}^SIU_S12|{control_id}|P|2.5.1"),
        format!(
            "SCH|PL-{appointment}^EPIC|{appointment}^EPIC|||||FOLLOWUP^Follow-up^HL70276||20|min|^^20^{start}||||||||||||||Booked"
        ),
        "NTE|1||Bring previous reports".to_owned(),
        "PID|1||99^^^GOV^NI~P-1001^^^CITYGEN^MR||Sharma^Asha^^^^^L~Ash^Ashu^^^^^N||19850412|F|||12 MG Road^^Bengaluru||^PRN^PH^^91^80^41234567~^PRN^CP^^91^98123^45678||HIN^Hindi".to_owned(),
        "RGS|1|A".to_owned(),
        format!("AIS|1|A|CARD^Cardiology \\T\\ Vascular^L|{start}|||20|min"),
        format!("AIL|1|A|{facility}^Room 4"),
        "AIP|1|A|1001^Rao^Priya^^^Dr|ATTENDING".to_owned(),
        "ZCL|1|loyalty^gold".to_owned(),
        String::new(),
    ]
    .join("\r")
}

fn millis(at: &str) -> i64 {
    at.parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp_millis()
}

#[tokio::test]
async fn a_new_booking_is_acknowledged_aa_with_its_control_id_once_its_events_are_on_rabbitmq() {
    let app = spawn_app().await;
    let mut client = app.connect().await;

    let reply = client.send(&siu("S12", "MSG-0001", "20260301091500", "city", "FL-77", "202603050930")).await;

    assert_eq!(reply.code, "AA", "{}", reply.text);
    assert_eq!(reply.acknowledges, "MSG-0001");
    assert_eq!(
        reply.header,
        ["CARELINE", "CARELINE", "EPIC", "CITYGEN"].map(String::from),
        "sender and receiver swapped"
    );
    assert!(reply.errors.is_empty(), "{}", reply.text);

    let patient = app.next_patient().await;
    assert_eq!(patient.patient_id, "P-1001", "the MR identifier, not the first one");
    assert_eq!(patient.facility_id, "city");
    assert_eq!(patient.first_name.as_deref(), Some("Asha"));
    assert_eq!(patient.phone, "+919812345678", "the cellular phone, not the landline");
    assert_eq!(patient.language, "hi");
    assert_eq!(patient.consent, None, "HL7 SIU carries no WhatsApp consent and none is invented");
    assert_eq!(patient.reported_by, "hl7:EPIC");

    let appointment = app.next_appointment().await;
    assert_eq!(appointment.appointment_id, "FL-77");
    assert_eq!(appointment.patient_id, "P-1001");
    assert_eq!(appointment.status, AppointmentStatus::Booked);
    assert_eq!(appointment.starts_at.to_rfc3339(), "2026-03-05T04:00:00+00:00");
    assert_eq!(appointment.duration_minutes, Some(20));
    assert_eq!(appointment.version, millis("2026-03-01T03:45:00Z"), "MSH-7 in epoch milliseconds");
    assert_eq!(appointment.clinician.as_deref(), Some("Dr Priya Rao"));
    assert_eq!(appointment.department.as_deref(), Some("Cardiology & Vascular"));
}

#[tokio::test]
async fn book_reschedule_and_cancel_on_one_connection_publish_the_whole_lifecycle_in_order() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let messages = [
        ("S12", "MSG-1", "20260301090000", "202603050930"),
        ("S13", "MSG-2", "20260302090000", "202603061100"),
        ("S15", "MSG-3", "20260303090000", "202603061100"),
    ];

    for (trigger, control_id, sent_at, start) in messages {
        let reply = client.send(&siu(trigger, control_id, sent_at, "city", "FL-9", start)).await;
        assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AA", control_id), "{}", reply.text);
    }

    let mut appointments = Vec::new();
    for _ in messages {
        app.next_patient().await;
        appointments.push(app.next_appointment().await);
    }
    let seen: Vec<_> = appointments
        .iter()
        .map(|a| (a.status, a.starts_at.to_rfc3339(), a.version, a.appointment_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (AppointmentStatus::Booked, "2026-03-05T04:00:00+00:00".to_owned(), millis("2026-03-01T03:30:00Z"), "FL-9"),
            (AppointmentStatus::Booked, "2026-03-06T05:30:00+00:00".to_owned(), millis("2026-03-02T03:30:00Z"), "FL-9"),
            (
                AppointmentStatus::Cancelled,
                "2026-03-06T05:30:00+00:00".to_owned(),
                millis("2026-03-03T03:30:00Z"),
                "FL-9"
            ),
        ]
    );
}

#[tokio::test]
async fn a_modification_of_an_appointment_never_seen_is_accepted_as_a_booking() {
    let app = spawn_app().await;
    let mut client = app.connect().await;

    let reply = client.send(&siu("S14", "MSG-14", "20260301091500", "north", "FL-NEW", "202603051000")).await;

    assert_eq!(reply.code, "AA", "{}", reply.text);
    app.next_patient().await;
    let appointment = app.next_appointment().await;
    assert_eq!(appointment.appointment_id, "FL-NEW");
    assert_eq!(appointment.facility_id, "north");
    assert_eq!(appointment.status, AppointmentStatus::Booked);
}

#[tokio::test]
async fn a_no_show_and_a_deletion_end_the_appointment() {
    let app = spawn_app().await;
    let mut client = app.connect().await;

    for (trigger, control_id) in [("S26", "MSG-26"), ("S17", "MSG-17")] {
        let reply = client.send(&siu(trigger, control_id, "20260305100000", "city", "FL-1", "202603050930")).await;
        assert_eq!(reply.code, "AA", "{}", reply.text);
        app.next_patient().await;
        assert_eq!(app.next_appointment().await.status, AppointmentStatus::Cancelled, "{trigger}");
    }
}

#[tokio::test]
async fn malformed_messages_get_error_acks_and_the_same_connection_keeps_working() {
    let app = spawn_app().await;
    let mut client = app.connect().await;

    let not_hl7 = client.send("hello, is this the hospital?").await;
    assert_eq!(not_hl7.code, "AR", "{}", not_hl7.text);
    assert_eq!(not_hl7.acknowledges, "");

    let adt = client.send("MSH|^~\\&|EPIC|CITYGEN|||20260301||ADT^A01|MSG-ADT|P|2.5\rPID|1||P1\r").await;
    assert_eq!((adt.code.as_str(), adt.acknowledges.as_str()), ("AR", "MSG-ADT"));
    assert_eq!(adt.error_codes(), ["200"]);

    let bad_date = siu("S12", "MSG-BAD", "20260301091500", "city", "FL-1", "tomorrow");
    let reply = client.send(&bad_date).await;
    assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AE", "MSG-BAD"), "{}", reply.text);
    assert_eq!(reply.errors[0].0, "SCH^1^11^^4");
    assert_eq!(reply.error_codes(), ["102"]);
    assert!(!reply.text.contains("Sharma") && !reply.text.contains("98123"), "no PHI in ACKs: {}", reply.text);
    assert!(app.nothing_published().await, "nothing is published for a message with errors");

    let good = client.send(&siu("S12", "MSG-GOOD", "20260301091500", "city", "FL-1", "202603050930")).await;
    assert_eq!((good.code.as_str(), good.acknowledges.as_str()), ("AA", "MSG-GOOD"), "{}", good.text);
    app.next_patient().await;
    assert_eq!(app.next_appointment().await.appointment_id, "FL-1");
}

#[tokio::test]
async fn every_invalid_field_is_listed_in_one_ae_and_nothing_is_half_written() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let message = siu("S12", "MSG-X", "20260301091500", "atlantis", "FL-1", "202603050930")
        .replace("MSH|^~\\&|EPIC|CITYGEN", "MSH|^~\\&|EPIC|atlantis")
        .replace("||20|min|^^20^", "||2000|min|^^^")
        .replace("||HIN^Hindi", "||klingon-language");

    let reply = client.send(&message).await;

    assert_eq!(reply.code, "AE", "{}", reply.text);
    let located: Vec<(&str, &str)> = reply.errors.iter().map(|(at, code, _)| (at.as_str(), code.as_str())).collect();
    assert_eq!(located, [("MSH^1^4", "103"), ("SCH^1^9", "102"), ("PID^1^15", "102")], "{}", reply.text);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn a_patient_without_a_mobile_number_still_gets_the_appointment_with_a_warning() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let message = siu("S12", "MSG-W", "20260301091500", "city", "FL-1", "202603050930")
        .replace("~^PRN^CP^^91^98123^45678", "~9812345678^PRN^CP");

    let reply = client.send(&message).await;

    assert_eq!(reply.code, "AA", "{}", reply.text);
    assert_eq!(reply.errors, [("PID^1^13".to_owned(), "101".to_owned(), "W".to_owned())]);
    assert_eq!(app.next_appointment().await.appointment_id, "FL-1", "the appointment, and no patient event first");
}

#[tokio::test]
async fn a_source_not_allowed_for_the_facility_gets_ar_and_nothing_is_published() {
    let app = spawn_app_with(Options {
        mllp: MllpSettings { allow: Some("city=127.0.0.1/32;north=10.0.0.0/8".parse().unwrap()), ..Default::default() },
        ..Options::default()
    })
    .await;
    let mut client = app.connect().await;

    let reply = client.send(&siu("S12", "MSG-N", "20260301091500", "north", "FL-1", "202603050930")).await;

    assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AR", "MSG-N"), "{}", reply.text);
    assert_eq!(reply.errors[0].0, "AIL^1^3");
    assert!(app.nothing_published().await);

    let allowed = client.send(&siu("S12", "MSG-C", "20260301091500", "city", "FL-2", "202603050930")).await;
    assert_eq!(allowed.code, "AA", "{}", allowed.text);
}

#[tokio::test]
async fn a_peer_that_no_facility_allows_is_disconnected_at_once() {
    let app = spawn_app_with(Options {
        mllp: MllpSettings { allow: Some("north=10.0.0.0/8".parse().unwrap()), ..Default::default() },
        ..Options::default()
    })
    .await;
    let mut client = app.connect().await;

    let _ = client
        .stream
        .write_all(&mllp::frame(siu("S12", "M", "20260301", "north", "F", "202603050930").as_bytes()))
        .await;

    assert!(client.reply().await.is_none(), "the connection is closed without an answer");
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_oversized_message_gets_ar_echoing_its_control_id_and_the_connection_goes_on() {
    let app = spawn_app_with(Options {
        mllp: MllpSettings { max_message_bytes: 4096, ..Default::default() },
        ..Options::default()
    })
    .await;
    let mut client = app.connect().await;
    let huge = siu("S12", "MSG-HUGE", "20260301091500", "city", "FL-1", "202603050930") + &"NTE|1||".repeat(2000);

    let reply = client.send(&huge).await;

    assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AR", "MSG-HUGE"), "{}", reply.text);
    assert!(reply.text.contains("at most 4096"), "{}", reply.text);
    assert!(app.nothing_published().await);

    let next = client.send(&siu("S12", "MSG-NEXT", "20260301091500", "city", "FL-1", "202603050930")).await;
    assert_eq!(next.code, "AA", "{}", next.text);
}

#[tokio::test]
async fn junk_between_frames_and_frames_split_across_writes_are_tolerated() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let mut wire = b"\r\n\0keepalive".to_vec();
    wire.extend(mllp::frame(siu("S12", "MSG-A", "20260301091500", "city", "FL-1", "202603050930").as_bytes()));
    wire.extend(b"\r\n");
    wire.extend(mllp::frame(siu("S14", "MSG-B", "20260301091600", "city", "FL-1", "202603050930").as_bytes()));

    for chunk in wire.chunks(97) {
        client.stream.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let first = client.reply().await.unwrap();
    let second = client.reply().await.unwrap();
    assert_eq!([first.acknowledges, second.acknowledges], ["MSG-A", "MSG-B"]);
    assert_eq!([first.code, second.code], ["AA", "AA"]);
}

#[tokio::test]
async fn enhanced_mode_is_answered_with_commit_acknowledgements() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let enhanced = |control_id: &str, start: &str| {
        siu("S12", control_id, "20260301091500", "city", "FL-1", start)
            .replace(&format!("{control_id}|P|2.5.1"), &format!("{control_id}|P|2.5.1|||AL|NE"))
    };

    let accepted = client.send(&enhanced("MSG-CA", "202603050930")).await;
    let refused = client.send(&enhanced("MSG-CE", "soon")).await;

    assert_eq!((accepted.code.as_str(), accepted.acknowledges.as_str()), ("CA", "MSG-CA"), "{}", accepted.text);
    assert_eq!((refused.code.as_str(), refused.acknowledges.as_str()), ("CE", "MSG-CE"), "{}", refused.text);
}

#[tokio::test]
async fn training_messages_are_refused_by_a_production_interface() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    let training =
        siu("S12", "MSG-T", "20260301091500", "city", "FL-1", "202603050930").replace("|P|2.5.1", "|T|2.5.1");

    let reply = client.send(&training).await;

    assert_eq!(reply.code, "AR", "{}", reply.text);
    assert_eq!(reply.error_codes(), ["202"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_unreachable_broker_gets_ae_so_the_engine_resends() {
    let app = spawn_app_with(Options {
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        mllp: MllpSettings::default(),
    })
    .await;
    let mut client = app.connect().await;

    let reply = client.send(&siu("S12", "MSG-R", "20260301091500", "city", "FL-1", "202603050930")).await;

    assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AE", "MSG-R"), "{}", reply.text);
    assert_eq!(reply.error_codes(), ["207"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(Options {
        mllp: MllpSettings { idle_timeout: Duration::from_millis(300), ..Default::default() },
        ..Options::default()
    })
    .await;
    let mut client = app.connect().await;

    let started = tokio::time::Instant::now();
    assert!(client.reply().await.is_none());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn messages_are_counted_by_trigger_and_outcome() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.send(&siu("S12", "M1", "20260301091500", "city", "FL-1", "202603050930")).await;
    client.send(&siu("S13", "M2", "20260301091500", "city", "FL-1", "later")).await;

    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();

    let line = |trigger: &str, outcome: &str| {
        metrics.lines().any(|l| {
            l.starts_with("careline_ingest_hl7_messages_total")
                && l.contains(&format!("trigger=\"{trigger}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    assert!(line("S12", "accepted") && line("S13", "error"), "{metrics}");
}

#[tokio::test]
async fn shutdown_lets_open_connections_go_and_stops_the_listener() {
    let mut app = spawn_app().await;
    let mut client = app.connect().await;
    let reply = client.send(&siu("S12", "M1", "20260301091500", "city", "FL-1", "202603050930")).await;
    assert_eq!(reply.code, "AA");

    app.shutdown.cancel();
    let running = app.running.take().unwrap();
    tokio::time::timeout(PATIENCE, running).await.expect("ingest stops promptly").unwrap().unwrap();

    assert!(client.reply().await.is_none(), "the open connection was closed");
    assert!(TcpStream::connect(app.mllp).await.is_err(), "the listener is gone");
}

#[tokio::test]
async fn mllp_over_tls_is_served_with_the_configured_certificate() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let app = spawn_app_with(Options {
        mllp: MllpSettings {
            tls: Some(TlsFiles {
                cert: fixtures.join("mllp-test-localhost.crt"),
                key: fixtures.join("mllp-test-localhost.key"),
            }),
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(fixtures.join("mllp-test-ca.crt")).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(app.mllp).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake");
    let mut client = MllpClient::new(tls);

    let reply = client.send(&siu("S12", "MSG-TLS", "20260301091500", "city", "FL-1", "202603050930")).await;

    assert_eq!((reply.code.as_str(), reply.acknowledges.as_str()), ("AA", "MSG-TLS"), "{}", reply.text);
    app.next_patient().await;
    assert_eq!(app.next_appointment().await.appointment_id, "FL-1");

    // A client speaking plain MLLP to the TLS port gets nothing but a closed connection.
    let mut plain = app.connect().await;
    let _ = plain.stream.write_all(&mllp::frame(b"MSH|^~\\&|A")).await;
    assert!(plain.reply().await.is_none());
}
