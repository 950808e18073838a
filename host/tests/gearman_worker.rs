//! Integration tests of the Gearman worker core, admin client and client against a real
//! `gearmand` and Zuul's `gear.Server` (the test support crate's [`JobServer`], started per
//! test on a free port) and a scripted fake server for exact packet sequences.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;
use tokio_util::codec::Framed;

use turbo_hipster::gearman::admin::AdminClient;
use turbo_hipster::gearman::client::{Client, JobEvent, Priority, SubmittedJob};
use turbo_hipster::gearman::codec::PacketCodec;
use turbo_hipster::gearman::packet::{Packet, PacketType};
use turbo_hipster::gearman::worker::{AssignedJob, JobReporter, Worker, WorkerConfig};
use turbo_hipster_tests::{JobServer, ServerKind};

const T: Duration = Duration::from_secs(10);

/// The host's admin client on the server at `port`.
async fn admin(port: u16) -> AdminClient {
    AdminClient::connect("127.0.0.1", port, Duration::from_secs(2))
        .await
        .expect("admin connect")
}

/// The host's client on the server at `port`.
async fn client(port: u16) -> Client {
    Client::connect("127.0.0.1", port)
        .await
        .expect("client connect")
}

/// Waits until `function` has at least one registered worker on the server at `port`, asking
/// through the host's admin client.
async fn wait_registered(port: u16, function: &str) {
    let deadline = Instant::now() + T;
    while !admin(port)
        .await
        .is_registered(function)
        .await
        .expect("status")
    {
        assert!(Instant::now() < deadline, "{function} never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh gearmand on a free port, killed on drop.
fn gearmand() -> JobServer {
    JobServer::start(ServerKind::Gearmand)
}

fn config(ports: &[u16], functions: &[&str], priority: &[&str], slots: usize) -> WorkerConfig {
    WorkerConfig {
        servers: ports
            .iter()
            .map(|p| ("127.0.0.1".to_string(), *p))
            .collect(),
        client_id: "th-test".to_string(),
        functions: functions.iter().map(|s| s.to_string()).collect(),
        priority_functions: priority.iter().map(|s| s.to_string()).collect(),
        max_concurrent_jobs: slots,
        ..WorkerConfig::default()
    }
}

fn data_events(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Data(d) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_reports_data_status_and_completes() {
    let g = gearmand();
    let worker = Worker::spawn(
        config(&[g.port], &["build:unit"], &[], 1),
        |job: AssignedJob, r: JobReporter| async move {
            r.work_data(format!(
                r#"{{"name":"unit","number":"{}","manager":"th"}}"#,
                job.unique_str().unwrap_or("?")
            ));
            r.work_status(0, 100);
            r.work_status(50, 100);
            let mut echo = b"got:".to_vec();
            echo.extend_from_slice(&job.data);
            r.work_data(echo);
            assert!(r.complete(r#"{"result":"SUCCESS"}"#));
            // A second terminal packet is refused.
            assert!(!r.fail());
            assert!(!r.work_data("late"));
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:unit").await;

    let client = client(g.port).await;
    let job = client
        .submit(
            "build:unit",
            "uuid-1",
            &b"{\"a\":\"b\0c\"}"[..],
            Priority::Normal,
        )
        .await
        .expect("submit");
    let handle = job.handle().clone();
    let events = timeout(T, job.wait())
        .await
        .expect("in time")
        .expect("events");
    assert_eq!(
        events,
        vec![
            JobEvent::Data(Bytes::from_static(
                br#"{"name":"unit","number":"uuid-1","manager":"th"}"#
            )),
            JobEvent::Status {
                numerator: 0,
                denominator: 100
            },
            JobEvent::Status {
                numerator: 50,
                denominator: 100
            },
            JobEvent::Data(Bytes::from_static(b"got:{\"a\":\"b\0c\"}")),
            JobEvent::Complete(Bytes::from_static(br#"{"result":"SUCCESS"}"#)),
        ]
    );
    // Finished jobs are unknown to the server (Zuul would mark a running one LOST).
    let st = client.get_status(&handle).await.expect("status");
    assert!(!st.known);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_send_exactly_one_work_fail() {
    let g = gearmand();
    let worker = Worker::spawn(
        config(&[g.port], &["build:fail"], &[], 2),
        |job: AssignedJob, r: JobReporter| async move {
            match &job.data[..] {
                b"explicit" => {
                    r.work_data(r#"{"result":"FAILURE"}"#);
                    r.fail();
                }
                b"forgot" => {
                    r.work_data("no result");
                }
                b"panic" => panic!("handler bug"),
                b"exception" => {
                    r.exception("boom");
                }
                _ => unreachable!(),
            }
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:fail").await;
    let client = client(g.port).await;
    for (kind, expect_data) in [
        ("explicit", vec![r#"{"result":"FAILURE"}"#]),
        ("forgot", vec!["no result"]),
        ("panic", vec![]),
    ] {
        let job = client
            .submit("build:fail", kind, kind, Priority::Normal)
            .await
            .expect("submit");
        let events = timeout(T, job.wait())
            .await
            .expect("in time")
            .expect("events");
        assert_eq!(events.last(), Some(&JobEvent::Fail), "{kind}: {events:?}");
        assert_eq!(
            events.iter().filter(|e| e.is_terminal()).count(),
            1,
            "{kind}"
        );
        assert_eq!(data_events(&events), expect_data, "{kind}");
    }
    // An exception ends the job. gearmand forwards it only to clients that enabled the
    // `exceptions` option (our client does not; Zuul's does not either), so speak raw here.
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", g.port))
        .await
        .expect("connect");
    let mut raw = Framed::new(sock, PacketCodec::default());
    let req = |kind, args: &[&'static [u8]]| {
        Packet::req(kind, args.iter().map(|a| Bytes::from_static(a)).collect())
    };
    raw.send(req(PacketType::OptionReq, &[b"exceptions"]))
        .await
        .expect("send");
    raw.send(req(
        PacketType::SubmitJob,
        &[b"build:fail", b"exception", b"exception"],
    ))
    .await
    .expect("send");
    let mut kinds = Vec::new();
    while kinds.last() != Some(&PacketType::WorkException) {
        let p = timeout(T, raw.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("valid");
        if p.kind == PacketType::WorkException {
            assert_eq!(p.arg(1), b"boom");
        }
        kinds.push(p.kind);
    }
    assert_eq!(
        kinds,
        vec![
            PacketType::OptionRes,
            PacketType::JobCreated,
            PacketType::WorkException
        ]
    );
    timeout(T, worker.wait_idle()).await.expect("idle");
    let status = admin(g.port).await.status().await.expect("status");
    let f = status
        .iter()
        .find(|f| f.name == "build:fail")
        .expect("listed");
    assert_eq!((f.total, f.running), (0, 0), "{status:?}");
    worker.shutdown().await;
}

/// Tracks how many handlers run at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    servers: Mutex<Vec<usize>>,
}

impl Concurrency {
    async fn run(&self, job: &AssignedJob, r: &JobReporter, hold: Duration) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.servers.lock().expect("lock").push(job.server.index);
        tokio::time::sleep(hold).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        r.complete(job.data.clone());
    }
}

/// Two fresh gearmand servers and a worker with one slot for both; each job of `function`
/// records itself in the returned [`Concurrency`] and holds the slot for `hold`.
async fn one_slot_two_servers(
    function: &'static str,
    hold: Duration,
) -> (JobServer, JobServer, Arc<Concurrency>, Worker) {
    let g1 = gearmand();
    let g2 = gearmand();
    let c = Arc::new(Concurrency::default());
    let cc = c.clone();
    let worker = Worker::spawn(
        config(&[g1.port, g2.port], &[function], &[], 1),
        move |job: AssignedJob, r: JobReporter| {
            let c = cc.clone();
            async move { c.run(&job, &r, hold).await }
        },
    )
    .expect("spawn");
    wait_registered(g1.port, function).await;
    wait_registered(g2.port, function).await;
    (g1, g2, c, worker)
}

/// Waits for every job; each must end with WORK_COMPLETE.
async fn all_complete(jobs: Vec<SubmittedJob>) {
    for job in jobs {
        let events = timeout(T, job.wait())
            .await
            .expect("in time")
            .expect("events");
        assert!(
            matches!(events.last(), Some(JobEvent::Complete(_))),
            "{events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_run_at_most_two_jobs_at_once() {
    let g = gearmand();
    let c = Arc::new(Concurrency::default());
    let cc = c.clone();
    let worker = Worker::spawn(
        config(&[g.port], &["build:slots"], &[], 2),
        move |job: AssignedJob, r: JobReporter| {
            let c = cc.clone();
            async move { c.run(&job, &r, Duration::from_millis(300)).await }
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:slots").await;
    let client = client(g.port).await;
    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(
            client
                .submit(
                    "build:slots",
                    &format!("u{i}"),
                    format!("d{i}"),
                    Priority::Normal,
                )
                .await
                .expect("submit"),
        );
    }
    // While the first two run, the server sees two running and one queued.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = admin(g.port).await.status().await.expect("status");
    let f = status
        .iter()
        .find(|f| f.name == "build:slots")
        .expect("listed");
    assert_eq!((f.total, f.running), (3, 2), "{status:?}");
    for (i, job) in jobs.into_iter().enumerate() {
        let events = timeout(T, job.wait())
            .await
            .expect("in time")
            .expect("events");
        assert_eq!(
            events.last(),
            Some(&JobEvent::Complete(Bytes::from(format!("d{i}"))))
        );
    }
    assert_eq!(c.max.load(Ordering::SeqCst), 2);
    // Two rounds of 300 ms: the third job waited for a slot.
    assert!(started.elapsed() >= Duration::from_millis(600));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_slot_budget() {
    let (g1, g2, c, worker) = one_slot_two_servers("build:multi", Duration::from_millis(150)).await;
    assert_eq!(worker.registered_connections(), 2);
    let (c1, c2) = (client(g1.port).await, client(g2.port).await);
    let mut jobs = Vec::new();
    for i in 0..2 {
        jobs.push(
            c1.submit(
                "build:multi",
                &format!("a{i}"),
                format!("one-{i}"),
                Priority::Normal,
            )
            .await
            .expect("submit"),
        );
        jobs.push(
            c2.submit(
                "build:multi",
                &format!("b{i}"),
                format!("two-{i}"),
                Priority::Normal,
            )
            .await
            .expect("submit"),
        );
    }
    all_complete(jobs).await;
    assert_eq!(
        c.max.load(Ordering::SeqCst),
        1,
        "one slot across both servers"
    );
    let mut servers = c.servers.lock().expect("lock").clone();
    servers.sort();
    assert_eq!(servers, vec![0, 0, 1, 1]);
    worker.shutdown().await;
}

/// A job's slot goes straight to the next grab on its own connection only while no other
/// connection waits for one: a server with a long queue does not starve another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_does_not_starve_another() {
    let (g1, g2, c, worker) = one_slot_two_servers("build:fair", Duration::from_millis(100)).await;
    let (c1, c2) = (client(g1.port).await, client(g2.port).await);
    let mut jobs = Vec::new();
    for i in 0..8 {
        let job = c1
            .submit("build:fair", &format!("a{i}"), "a", Priority::Normal)
            .await
            .expect("submit");
        jobs.push(job);
    }
    // The first server's queue is being worked through when the second one gets jobs.
    let start = Instant::now();
    while c.servers.lock().expect("lock").is_empty() {
        assert!(start.elapsed() < T, "no job started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..4 {
        let job = c2
            .submit("build:fair", &format!("b{i}"), "b", Priority::Normal)
            .await
            .expect("submit");
        jobs.push(job);
    }
    all_complete(jobs).await;
    let order = c.servers.lock().expect("lock").clone();
    assert_eq!(c.max.load(Ordering::SeqCst), 1, "one slot");
    assert_eq!(order.len(), 12, "{order:?}");
    // Once the second server has work, the two take turns.
    let first_b = order.iter().position(|&s| s == 1).expect("server 2 served");
    assert!(first_b <= 3, "server 2 waited behind server 1: {order:?}");
    assert!(
        order[..8].iter().filter(|&&s| s == 1).count() >= 3,
        "server 2 starved: {order:?}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_server_restart() {
    let mut g = gearmand();
    let worker = Worker::spawn(
        config(&[g.port], &["build:restart"], &["stop:th-test"], 1),
        |job: AssignedJob, r: JobReporter| async move {
            r.complete(job.data.clone());
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:restart").await;
    // Let the worker settle into PRE_SLEEP, then restart the server under it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    g.restart();
    let restarted = Instant::now();
    let client = client(g.port).await;
    let job = client
        .submit("build:restart", "after", "after-restart", Priority::Normal)
        .await
        .expect("submit");
    let events = timeout(Duration::from_secs(5), job.wait())
        .await
        .expect("job taken within 5 s of the restart")
        .expect("events");
    assert_eq!(
        events,
        vec![JobEvent::Complete(Bytes::from_static(b"after-restart"))]
    );
    assert!(restarted.elapsed() < Duration::from_secs(5));
    // Both the normal and the control connection came back with their registrations.
    let workers = admin(g.port).await.workers().await.expect("workers");
    let ids: Vec<_> = workers
        .iter()
        .filter(|w| w.client_id.starts_with("th-test"))
        .map(|w| (w.client_id.clone(), w.functions.clone()))
        .collect();
    assert!(
        ids.contains(&("th-test".into(), vec!["build:restart".into()])),
        "{ids:?}"
    );
    let deadline = Instant::now() + T;
    while !admin(g.port)
        .await
        .is_registered("stop:th-test")
        .await
        .expect("status")
    {
        assert!(
            Instant::now() < deadline,
            "control connection did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

/// Submits a build and waits until it has started (its first `WORK_DATA`).
async fn started(
    client: &Client,
    function: &str,
    unique: &str,
    data: &'static str,
) -> SubmittedJob {
    let mut build = client
        .submit(function, unique, data, Priority::Normal)
        .await
        .expect("submit");
    assert!(matches!(
        timeout(T, build.next_event()).await.expect("started"),
        Some(JobEvent::Data(_))
    ));
    build
}

/// Submits `stop:th-test` with `data` at high priority while `build` runs: the stop completes
/// with `stopped`; the build's events after that.
async fn stopped(client: &Client, build: SubmittedJob, data: &'static str) -> Vec<JobEvent> {
    let stop = client
        .submit("stop:th-test", "stop", data, Priority::High)
        .await
        .expect("submit stop");
    let stop_events = timeout(T, stop.wait())
        .await
        .expect("stop served")
        .expect("events");
    assert_eq!(
        stop_events,
        vec![JobEvent::Complete(Bytes::from_static(b"stopped"))]
    );
    timeout(T, build.wait())
        .await
        .expect("build ended")
        .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_served_while_the_only_slot_is_busy() {
    let g = gearmand();
    // The build waits until the stop job tells it to abort.
    let abort = Arc::new(Notify::new());
    let builds = Arc::new(AtomicUsize::new(0));
    let (a, b) = (abort.clone(), builds.clone());
    let worker = Worker::spawn(
        config(&[g.port], &["build:long"], &["stop:th-test"], 1),
        move |job: AssignedJob, r: JobReporter| {
            let (abort, builds) = (a.clone(), b.clone());
            async move {
                if job.function == "stop:th-test" {
                    assert!(job.priority);
                    abort.notify_one();
                    r.complete("stopped");
                } else {
                    assert!(!job.priority);
                    builds.fetch_add(1, Ordering::SeqCst);
                    r.work_data(r#"{"number":"1","manager":"th-test"}"#);
                    abort.notified().await;
                    r.work_data(r#"{"result":"ABORTED"}"#);
                    r.fail();
                }
            }
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:long").await;
    wait_registered(g.port, "stop:th-test").await;
    let workers = admin(g.port).await.workers().await.expect("workers");
    let control = workers
        .iter()
        .find(|w| w.client_id == "th-test-control")
        .expect("control connection listed");
    assert_eq!(control.functions, vec!["stop:th-test"]);
    let normal = workers
        .iter()
        .find(|w| w.client_id == "th-test")
        .expect("normal connection listed");
    assert_eq!(normal.functions, vec!["build:long"]);

    let client = client(g.port).await;
    let build = started(&client, "build:long", "b1", "x").await;
    // A second build waits: the only slot is busy.
    let second = client
        .submit("build:long", "b2", "y", Priority::Normal)
        .await
        .expect("submit");
    let rest = stopped(&client, build, r#"{"name":"long","number":"1"}"#).await;
    assert_eq!(
        rest,
        vec![
            JobEvent::Data(Bytes::from_static(br#"{"result":"ABORTED"}"#)),
            JobEvent::Fail
        ]
    );
    // Now the second build gets the slot; abort it too.
    let deadline = Instant::now() + T;
    while builds.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "second build never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    abort.notify_one();
    let events = timeout(T, second.wait())
        .await
        .expect("ended")
        .expect("events");
    assert_eq!(events.last(), Some(&JobEvent::Fail));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_running_jobs_and_takes_no_new_ones() {
    let g = gearmand();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let worker = Worker::spawn(
        config(&[g.port], &["build:drain"], &[], 2),
        move |job: AssignedJob, r: JobReporter| {
            let rx = release_rx.lock().expect("lock").take();
            async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                r.complete(job.data.clone());
            }
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:drain").await;
    let client = client(g.port).await;
    let first = client
        .submit("build:drain", "d1", "first", Priority::Normal)
        .await
        .expect("submit");
    let deadline = Instant::now() + T;
    while worker.running_jobs() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.stop_grabbing();
    let queued = client
        .submit("build:drain", "d2", "queued", Priority::Normal)
        .await
        .expect("submit");
    let port = g.port;
    let shutdown = tokio::spawn(worker.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown must wait for the running job"
    );
    let _ = release_tx.send(());
    timeout(T, shutdown).await.expect("drained").expect("join");
    let events = timeout(T, first.wait())
        .await
        .expect("in time")
        .expect("events");
    assert_eq!(
        events,
        vec![JobEvent::Complete(Bytes::from_static(b"first"))]
    );
    let mut admin = AdminClient::connect("127.0.0.1", port, T)
        .await
        .expect("admin");
    let status = admin.status().await.expect("status");
    let f = status
        .iter()
        .find(|f| f.name == "build:drain")
        .expect("listed");
    assert_eq!(
        (f.total, f.running),
        (1, 0),
        "second job left queued: {status:?}"
    );
    drop(queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_reports_registration_and_version() {
    let g = gearmand();
    let mut admin = admin(g.port).await;
    let version = admin.version().await.expect("version");
    assert!(version.starts_with("1."), "{version}");
    assert!(!admin.is_registered("build:admin").await.expect("status"));
    let worker = Worker::spawn(
        config(&[g.port], &["build:admin", "build:admin:node"], &[], 1),
        |_job: AssignedJob, r: JobReporter| async move {
            r.fail();
        },
    )
    .expect("spawn");
    wait_registered(g.port, "build:admin:node").await;
    assert!(admin.is_registered("build:admin").await.expect("status"));
    let workers = admin.workers().await.expect("workers");
    let w = workers
        .iter()
        .find(|w| w.client_id == "th-test")
        .expect("listed");
    let mut fs = w.functions.clone();
    fs.sort();
    assert_eq!(fs, vec!["build:admin", "build:admin:node"]);
    // Unknown commands come back as server errors and leave the client usable.
    assert!(matches!(
        admin.command("bogus", false).await,
        Err(turbo_hipster::gearman::Error::Server { .. })
    ));
    assert!(admin.version().await.is_ok());
    worker.shutdown().await;
    // After shutdown the function is no longer registered.
    let deadline = Instant::now() + T;
    while admin.is_registered("build:admin").await.expect("status") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A scripted fake server: checks the exact packets the worker sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_speaks_the_expected_packet_sequence() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let completions = Arc::new(AtomicUsize::new(0));
    let done = completions.clone();
    let worker = Worker::spawn(
        config(&[port], &["build:a", "build:b"], &[], 1),
        move |job: AssignedJob, r: JobReporter| {
            let done = done.clone();
            async move {
                assert_eq!(job.function, "build:a");
                assert_eq!(&job.unique[..], b"U");
                assert_eq!(&job.data[..], b"{\0}");
                r.work_status(1, 2);
                done.fetch_add(1, Ordering::SeqCst);
                r.complete("ok");
            }
        },
    )
    .expect("spawn");
    let (sock, _) = timeout(T, listener.accept())
        .await
        .expect("connect")
        .expect("accept");
    let mut conn = Framed::new(sock, PacketCodec::default());
    async fn expect(
        conn: &mut Framed<tokio::net::TcpStream, PacketCodec>,
        kind: PacketType,
    ) -> Packet {
        let p = timeout(T, conn.next())
            .await
            .expect("packet in time")
            .expect("open")
            .expect("valid");
        assert_eq!(p.kind, kind, "{p:?}");
        p
    }
    async fn expect_silence(conn: &mut Framed<tokio::net::TcpStream, PacketCodec>) {
        if let Ok(p) = timeout(Duration::from_millis(300), conn.next()).await {
            panic!("unexpected packet {p:?}");
        }
    }
    let p = expect(&mut conn, PacketType::SetClientId).await;
    assert_eq!(p.arg(0), b"th-test");
    assert_eq!(
        expect(&mut conn, PacketType::CanDo).await.arg(0),
        b"build:a"
    );
    assert_eq!(
        expect(&mut conn, PacketType::CanDo).await.arg(0),
        b"build:b"
    );
    expect(&mut conn, PacketType::GrabJobUniq).await;
    // Only one grab outstanding.
    expect_silence(&mut conn).await;
    // Unknown packets and ERRORs are skipped; NO_JOB makes it sleep.
    let res = |kind, args: &[&'static [u8]]| {
        Packet::res(kind, args.iter().map(|a| Bytes::from_static(a)).collect())
    };
    conn.send(res(PacketType::Unknown(4242), &[b"??"]))
        .await
        .expect("send");
    conn.send(res(PacketType::Error, &[b"ERR_CODE", b"text"]))
        .await
        .expect("send");
    conn.send(res(PacketType::NoJob, &[])).await.expect("send");
    expect(&mut conn, PacketType::PreSleep).await;
    expect_silence(&mut conn).await;
    // NOOP wakes it; it grabs once.
    conn.send(res(PacketType::Noop, &[])).await.expect("send");
    expect(&mut conn, PacketType::GrabJobUniq).await;
    conn.send(res(
        PacketType::JobAssignUniq,
        &[b"H:fake:1", b"build:a", b"U", b"{\0}"],
    ))
    .await
    .expect("send");
    let p = expect(&mut conn, PacketType::WorkStatus).await;
    assert_eq!(p.args, vec![&b"H:fake:1"[..], b"1", b"2"]);
    let p = expect(&mut conn, PacketType::WorkComplete).await;
    assert_eq!(p.args, vec![&b"H:fake:1"[..], b"ok"]);
    // The slot is free again: exactly one new grab.
    expect(&mut conn, PacketType::GrabJobUniq).await;
    expect_silence(&mut conn).await;
    assert_eq!(completions.load(Ordering::SeqCst), 1);

    // The server goes away: the worker reconnects and registers again.
    drop(conn);
    let (sock, _) = timeout(T, listener.accept())
        .await
        .expect("reconnect")
        .expect("accept");
    let mut conn = Framed::new(sock, PacketCodec::default());
    expect(&mut conn, PacketType::SetClientId).await;
    expect(&mut conn, PacketType::CanDo).await;
    expect(&mut conn, PacketType::CanDo).await;
    expect(&mut conn, PacketType::GrabJobUniq).await;
    drop(worker);
}

/// A job reporting from a thread of its own: progress goes out within the linger time even
/// while the job still runs; reports larger than the socket can take while the server is not
/// reading wait for the socket and arrive whole and in order; the terminal packet and the next
/// grab follow in the same write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_a_job_thread_survive_a_full_socket() {
    const CHUNK: usize = 4 << 20;
    const CHUNKS: u8 = 6;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(Some(go_rx)));
    let worker = Worker::spawn(
        WorkerConfig {
            max_packet_body: 8 << 20,
            ..config(&[port], &["build:big"], &[], 1)
        },
        move |_job: AssignedJob, r: JobReporter| {
            let go = go_rx.lock().unwrap().take().expect("one job");
            async move {
                // The handler returns at once; the job lives on in its thread.
                std::thread::spawn(move || {
                    r.work_status(1, 2);
                    go.recv().expect("go");
                    for i in 0..CHUNKS {
                        assert!(r.work_data(vec![b'a' + i; CHUNK]));
                    }
                    assert!(r.complete("done"));
                });
            }
        },
    )
    .expect("spawn");
    let (sock, _) = timeout(T, listener.accept())
        .await
        .expect("connect")
        .expect("accept");
    let mut conn = Framed::new(sock, PacketCodec::new(8 << 20));
    async fn next(
        conn: &mut Framed<tokio::net::TcpStream, PacketCodec>,
        within: Duration,
    ) -> Packet {
        timeout(within, conn.next())
            .await
            .expect("packet in time")
            .expect("open")
            .expect("valid")
    }
    for kind in [
        PacketType::SetClientId,
        PacketType::CanDo,
        PacketType::GrabJobUniq,
    ] {
        assert_eq!(next(&mut conn, T).await.kind, kind);
    }
    conn.send(Packet::res(
        PacketType::JobAssignUniq,
        vec![
            Bytes::from_static(b"H:fake:9"),
            Bytes::from_static(b"build:big"),
            Bytes::from_static(b"U"),
            Bytes::from_static(b"{}"),
        ],
    ))
    .await
    .expect("send");
    // The job is still running: its progress must not wait for the end.
    let p = next(&mut conn, Duration::from_millis(500)).await;
    assert_eq!(p.kind, PacketType::WorkStatus);
    go_tx.send(()).expect("go");
    // Do not read for a while: 24 MiB do not fit in the socket buffers.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..CHUNKS {
        let p = next(&mut conn, T).await;
        assert_eq!(p.kind, PacketType::WorkData);
        assert_eq!(p.arg(0), b"H:fake:9");
        assert_eq!(p.arg(1).len(), CHUNK);
        assert!(p.arg(1).iter().all(|&b| b == b'a' + i), "chunk {i} garbled");
    }
    let p = next(&mut conn, T).await;
    assert_eq!((p.kind, p.arg(1)), (PacketType::WorkComplete, &b"done"[..]));
    assert_eq!(next(&mut conn, T).await.kind, PacketType::GrabJobUniq);
    // The job's thread lets go of its reporter just after.
    let start = Instant::now();
    while worker.running_jobs() != 0 {
        assert!(start.elapsed() < T, "the job never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(worker);
}

/// An idle worker blocks: its thread neither burns CPU nor wakes up periodically.
#[test]
fn idle_worker_does_not_spin() {
    fn thread_stats() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name (which is in parentheses): utime is 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let cpu = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("switches");
        (cpu, switches)
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let g = gearmand();
        let worker = Worker::spawn(
            config(&[g.port], &["build:idle"], &["stop:idle"], 1),
            |_job: AssignedJob, r: JobReporter| async move {
                r.fail();
            },
        )
        .expect("spawn");
        wait_registered(g.port, "build:idle").await;
        wait_registered(g.port, "stop:idle").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (cpu0, sw0) = thread_stats();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu1, sw1) = thread_stats();
        assert!(cpu1 - cpu0 <= 2, "idle worker used {} ticks", cpu1 - cpu0);
        assert!(sw1 - sw0 <= 3, "idle worker woke {} times", sw1 - sw0);
        worker.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_against_zuuls_gear_server() {
    // Zuul v2's own server (`gear.Server`, Python, from the test venv).
    let gear = JobServer::start(ServerKind::Gear);
    let mut admin = AdminClient::connect("127.0.0.1", gear.port, Duration::from_millis(300))
        .await
        .expect("admin");
    assert!(matches!(
        admin.version().await,
        Err(turbo_hipster::gearman::Error::Timeout(_))
    ));
    let abort = Arc::new(Notify::new());
    let a = abort.clone();
    let worker = Worker::spawn(
        config(&[gear.port], &["build:gear"], &["stop:th-test"], 1),
        move |job: AssignedJob, r: JobReporter| {
            let abort = a.clone();
            async move {
                if job.priority {
                    abort.notify_one();
                    r.complete("stopped");
                } else {
                    r.work_data(r#"{"number":"1","manager":"th-test"}"#);
                    r.work_status(0, 100);
                    if &job.data[..] == b"wait" {
                        abort.notified().await;
                        r.work_data(r#"{"result":"ABORTED"}"#);
                        r.fail();
                    } else {
                        r.work_data(r#"{"result":"SUCCESS"}"#);
                        r.complete("");
                    }
                }
            }
        },
    )
    .expect("spawn");
    let deadline = Instant::now() + T;
    loop {
        let mut admin = AdminClient::connect("127.0.0.1", gear.port, T)
            .await
            .expect("admin");
        if admin.is_registered("build:gear").await.expect("status")
            && admin.is_registered("stop:th-test").await.expect("status")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never registered on gear");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = Client::connect("127.0.0.1", gear.port)
        .await
        .expect("client");
    let job = client
        .submit("build:gear", "g1", "go", Priority::Normal)
        .await
        .expect("submit");
    let events = timeout(T, job.wait())
        .await
        .expect("in time")
        .expect("events");
    assert_eq!(
        data_events(&events),
        vec![
            r#"{"number":"1","manager":"th-test"}"#,
            r#"{"result":"SUCCESS"}"#
        ]
    );
    assert_eq!(events.last(), Some(&JobEvent::Complete(Bytes::new())));

    // A stop while the only slot is busy.
    let build = started(&client, "build:gear", "g2", "wait").await;
    let rest = stopped(&client, build, "{}").await;
    assert_eq!(rest.last(), Some(&JobEvent::Fail));
    worker.shutdown().await;
}

/// A server that keeps sending an over-large packet that is not a job (after a valid one, so
/// the session counts as healthy) cannot make the worker reconnect in a tight loop: a protocol
/// error keeps the backoff growing. (Before, 120 reconnects in 90 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_non_job_packets_do_not_make_a_reconnect_loop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let worker = Worker::spawn(
        WorkerConfig {
            max_packet_body: 1024,
            reconnect_initial: Duration::from_millis(100),
            ..config(&[port], &["build:a"], &[], 1)
        },
        |_job: AssignedJob, r: JobReporter| async move {
            r.complete("");
        },
    )
    .expect("spawn");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut conn = Framed::new(sock, PacketCodec::new(1 << 20));
            while let Some(Ok(p)) = conn.next().await {
                if p.kind == PacketType::GrabJobUniq {
                    let _ = conn.send(Packet::res(PacketType::NoJob, vec![])).await;
                    let big = Bytes::from(vec![b'x'; 4096]);
                    let _ = conn.send(Packet::res(PacketType::EchoRes, vec![big])).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = connections.load(Ordering::SeqCst);
    // 100 ms doubling: connections at about 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s.
    assert!((2..=6).contains(&n), "{n} connections in 3 s");
    drop(worker);
    server.abort();
}

/// An over-large job from a scripted server: failed with a result on its handle, its slot goes
/// to the next grab, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_job_is_failed_on_the_same_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let _worker = Worker::spawn(
        WorkerConfig {
            max_packet_body: 1024,
            ..config(&[port], &["build:a"], &[], 1)
        },
        move |_job: AssignedJob, r: JobReporter| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                r.complete("");
            }
        },
    )
    .expect("spawn");
    let (sock, _) = timeout(T, listener.accept())
        .await
        .expect("connect")
        .expect("accept");
    let mut conn = Framed::new(sock, PacketCodec::new(1 << 20));
    let mut kinds = Vec::new();
    let mut sent_job = false;
    while kinds.len() < 4 {
        let p = timeout(T, conn.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("valid");
        match p.kind {
            PacketType::SetClientId | PacketType::CanDo => continue,
            PacketType::GrabJobUniq if !sent_job => {
                sent_job = true;
                let job = Packet::res(
                    PacketType::JobAssignUniq,
                    vec![
                        Bytes::from_static(b"H:fake:9"),
                        Bytes::from_static(b"build:a"),
                        Bytes::from_static(b"U9"),
                        Bytes::from(vec![b'{'; 300_000]),
                    ],
                );
                conn.send(job).await.expect("send");
            }
            PacketType::WorkData => {
                assert_eq!(p.arg(0), b"H:fake:9");
                assert_eq!(
                    p.arg(1),
                    br#"{"result":"FAILURE - job data of 300000 bytes exceeds max_packet_bytes (1024)"}"#
                );
            }
            PacketType::WorkFail => assert_eq!(p.arg(0), b"H:fake:9"),
            _ => {}
        }
        kinds.push(p.kind);
    }
    assert_eq!(
        kinds,
        [
            PacketType::GrabJobUniq,
            PacketType::WorkData,
            PacketType::WorkFail,
            PacketType::GrabJobUniq
        ]
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler never saw it");
}
