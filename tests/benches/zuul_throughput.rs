//! Throughput and added latency of the real daemon behind gearmand, next to a minimal
//! raw-protocol worker in the same run.
//!
//! Run on demand (not in CI): `cargo bench -p turbo-hipster-tests --bench zuul_throughput`
//! (`TH_BENCH_JOBS=N` jobs per measurement, default 10000; `TH_BENCH_ROUNDS=N` alternating
//! rounds, default 5; `TH_BENCH_SLOTS=1,8` the slot counts measured; `TH_BENCH_SETTLE=SECS`
//! also prints the daemon's RSS that long after each load).
//!
//! Each job is Zuul-shaped: a JSON object of Zuul parameters in, and out a start WORK_DATA,
//! WORK_STATUS, a result WORK_DATA and WORK_COMPLETE. The daemon runs it through a no-op
//! plugin (`tests/fixtures/test-plugin`, mode `noop`), so every job is validated, crosses the
//! plugin boundary on a job thread and leaves a history line, as a real job would; the plugin
//! writes no files, so no directory is made (a job that writes pays for its directories).
//! Printed: jobs/s with 1 and 8 slots under a saturating load (8 client connections, 32 jobs in
//! flight each) for both workers (medians) and the median of the rounds' ratios (each round
//! measures both back to back); jobs/s with one job in flight at a time (strictly
//! sequential); median and p99 round trip of a single job on an idle system for both and the
//! difference (the added latency); the idle daemon's RSS.
//!
//! These figures are the daemon's own overhead, so its jobs run `job_isolation: "in-process"`
//! (on its threads): with the default `"process"`, every job also pays for a child process
//! (exec, loading the plugin), which is the plugin's start-up, not the daemon's. That cost is
//! measured next, on its own: the same jobs in process mode, one at a time and saturating one
//! slot (`TH_BENCH_PROCESS_JOBS=N` jobs, default 300), and the cost per job against in-process.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use turbo_hipster::gearman::client::{Client, JobEvent, Priority};
use turbo_hipster::gearman::codec::PacketCodec;
use turbo_hipster::gearman::packet::{Packet, PacketType};
use turbo_hipster_tests::{fixture, Daemon, Fixture, JobServer, PluginDir, ServerKind, Setup};

const CLIENT_CONNECTIONS: usize = 8;
const WINDOW_PER_CONNECTION: usize = 32;

fn zuul_params(uuid: &str) -> String {
    json!({
        "ZUUL_UUID": uuid,
        "ZUUL_PROJECT": "openstack/nova",
        "ZUUL_PIPELINE": "check",
        "ZUUL_URL": "http://zuul.example.org/p",
        "ZUUL_REF": "refs/zuul/master/Zfa8228d022314ccd967a79ca3f853198",
        "ZUUL_COMMIT": "b1856cf0000000000000000000000000000000aa",
        "ZUUL_BRANCH": "master",
        "ZUUL_CHANGE": "65615",
        "ZUUL_PATCHSET": "7",
        "ZUUL_VOTING": "1",
        "LOG_PATH": format!("15/65615/7/check/noop/{}", &uuid[..7]),
    })
    .to_string()
}

/// A Zuul-like unique: distinct in its first 7 characters too (LOG_PATH uses them).
fn uuid(i: usize, tag: u32) -> String {
    format!("{i:024x}{tag:08x}")
}

/// A minimal raw-protocol worker: `slots` connections, each GRAB_JOB_UNIQ → the Zuul-shaped
/// replies → again; PRE_SLEEP/NOOP when idle.
async fn raw_worker(
    port: u16,
    function: &'static str,
    slots: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..slots {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut conn = Framed::new(stream, PacketCodec::new(1 << 20));
        tasks.push(tokio::spawn(async move {
            conn.send(Packet::set_client_id("raw")).await.unwrap();
            conn.send(Packet::can_do(function)).await.unwrap();
            conn.send(Packet::grab_job_uniq()).await.unwrap();
            while let Some(Ok(p)) = conn.next().await {
                match p.kind {
                    PacketType::NoJob => conn.send(Packet::pre_sleep()).await.unwrap(),
                    PacketType::Noop => conn.send(Packet::grab_job_uniq()).await.unwrap(),
                    PacketType::JobAssignUniq => {
                        let handle = Bytes::copy_from_slice(p.arg(0));
                        let unique = String::from_utf8_lossy(p.arg(2)).to_string();
                        let _params: serde_json::Value =
                            serde_json::from_slice(p.arg(3)).unwrap_or_default();
                        let start =
                            json!({"name": "noop", "number": unique, "manager": "raw", "url": "x"});
                        conn.feed(Packet::work_data(handle.clone(), start.to_string().into()))
                            .await
                            .unwrap();
                        conn.feed(Packet::work_status(handle.clone(), 0, 1))
                            .await
                            .unwrap();
                        let result = json!({"result": "SUCCESS"}).to_string();
                        conn.feed(Packet::work_data(handle.clone(), result.clone().into()))
                            .await
                            .unwrap();
                        conn.feed(Packet::work_complete(handle, result.into()))
                            .await
                            .unwrap();
                        conn.feed(Packet::grab_job_uniq()).await.unwrap();
                        conn.flush().await.unwrap();
                    }
                    _ => {}
                }
            }
        }));
    }
    tasks
}

async fn run_job(client: &Client, function: &str, id: &str) -> Duration {
    let start = Instant::now();
    let mut job = client
        .submit(function, id, zuul_params(id), Priority::Normal)
        .await
        .unwrap();
    loop {
        match job.next_event().await {
            Some(JobEvent::Complete(_)) => break,
            Some(e) if e.is_terminal() => panic!("job {id} failed: {e:?}"),
            Some(_) => {}
            None => panic!("connection lost"),
        }
    }
    start.elapsed()
}

/// Pushes `n` jobs through with a bounded window; returns jobs/s.
async fn throughput(port: u16, function: &'static str, n: usize, tag: u32) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..CLIENT_CONNECTIONS {
        clients.push(Client::connect("127.0.0.1", port).await.unwrap());
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let per = n / CLIENT_CONNECTIONS;
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(WINDOW_PER_CONNECTION));
            let mut inner = Vec::new();
            for i in 0..per {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let client = client.clone();
                let id = uuid(c * per + i, tag);
                inner.push(tokio::spawn(async move {
                    run_job(&client, function, &id).await;
                    drop(permit);
                }));
            }
            for t in inner {
                t.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let per = n / CLIENT_CONNECTIONS * CLIENT_CONNECTIONS;
    per as f64 / start.elapsed().as_secs_f64()
}

/// Single jobs one after another (one in flight at a time): (median, p99, jobs/s).
async fn latency(port: u16, function: &str, n: usize, tag: u32) -> (Duration, Duration, f64) {
    let client = Client::connect("127.0.0.1", port).await.unwrap();
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        samples.push(run_job(&client, function, &uuid(i, tag)).await);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    samples.sort();
    (samples[n / 2], samples[n * 99 / 100], rate)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One measurement of the raw worker with `slots` connections: (saturated jobs/s, sequential
/// figures when `sequential`).
fn measure_raw(
    rt: &tokio::runtime::Runtime,
    n: usize,
    slots: usize,
    sequential: bool,
) -> (f64, Option<(Duration, Duration, f64)>) {
    let server = JobServer::start(ServerKind::Gearmand);
    rt.block_on(async {
        let tasks = raw_worker(server.port, "build:noop", slots).await;
        server.wait_registered("build:noop", Duration::from_secs(10));
        let _ = throughput(server.port, "build:noop", n / 10, 1).await; // warm-up
        let t = throughput(server.port, "build:noop", n, 2).await;
        let l = if sequential {
            Some(latency(server.port, "build:noop", LATENCY_JOBS, 3).await)
        } else {
            None
        };
        for t in tasks {
            t.abort();
        }
        (t, l)
    })
}

/// One-job-at-a-time figures: (median round trip, p99 round trip, jobs/s).
type Sequential = (Duration, Duration, f64);

/// The same through the real daemon with `slots` slots; also its RSS in kB, idle before the
/// load and after it.
fn measure_daemon(
    rt: &tokio::runtime::Runtime,
    plugins: &PluginDir,
    n: usize,
    slots: usize,
    sequential: bool,
) -> (f64, Option<Sequential>, (u64, u64)) {
    measure_daemon_in(
        rt,
        plugins,
        (n, LATENCY_JOBS),
        slots,
        sequential,
        "in-process",
    )
}

/// [`measure_daemon`] with the given `job_isolation` and job counts (saturated, sequential).
fn measure_daemon_in(
    rt: &tokio::runtime::Runtime,
    plugins: &PluginDir,
    (n, latency_jobs): (usize, usize),
    slots: usize,
    sequential: bool,
    isolation: &str,
) -> (f64, Option<Sequential>, (u64, u64)) {
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "max_concurrent_jobs": slots,
            "job_isolation": isolation,
            "jobs": [{"name": "build:noop", "plugin": "test_plugin", "mode": "noop"}],
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:noop", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kb(daemon.child.id());
    let (t, l) = rt.block_on(async {
        let _ = throughput(server.port, "build:noop", n / 10, 4).await;
        let t = throughput(server.port, "build:noop", n, 5).await;
        let l = if sequential {
            Some(latency(server.port, "build:noop", latency_jobs, 6).await)
        } else {
            None
        };
        (t, l)
    });
    let after = rss_kb(daemon.child.id());
    if let Some(settle) = settle_secs() {
        let threads = || {
            std::fs::read_dir(format!("/proc/{}/task", daemon.child.id()))
                .map(Iterator::count)
                .unwrap_or(0)
        };
        let threads_after = threads();
        std::thread::sleep(Duration::from_secs(settle));
        println!(
            "  ({slots} slot(s): RSS {:.1} MB and {threads_after} threads right after the load, \
             {:.1} MB and {} threads {settle} s later)",
            after as f64 / 1024.0,
            rss_kb(daemon.child.id()) as f64 / 1024.0,
            threads()
        );
    }
    (t, l, (rss, after))
}

/// `TH_BENCH_SETTLE=SECS`: also measure the daemon's RSS that long after each load (idle job
/// threads end after 60 s).
fn settle_secs() -> Option<u64> {
    std::env::var("TH_BENCH_SETTLE").ok()?.parse().ok()
}

const LATENCY_JOBS: usize = 500;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The slot counts measured: `TH_BENCH_SLOTS` (comma-separated), default 1 and 8. The
/// one-at-a-time, latency and RSS figures come from the 1-slot runs.
fn slot_counts() -> Vec<usize> {
    std::env::var("TH_BENCH_SLOTS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect::<Vec<usize>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![1, 8])
}

fn main() {
    let n: usize = std::env::var("TH_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rounds: usize = std::env::var("TH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));

    println!(
        "turbo-hipster throughput: {n} Zuul-shaped no-op jobs per run, gearmand, {} cores, \
         medians of {rounds} alternating rounds",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<28}{:>12}{:>12}{:>10}",
        "", "raw worker", "daemon", "ratio"
    );
    let mut rss = Vec::new();
    let mut rss_after: Vec<(usize, u64)> = Vec::new();
    let (mut seq_raw, mut seq_daemon) = (Vec::new(), Vec::new());
    for slots in slot_counts() {
        let (mut raw, mut daemon) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (t, l) = measure_raw(&rt, n, slots, slots == 1);
            raw.push(t);
            if let Some(l) = l {
                seq_raw.push(l);
            }
            let (t, l, r) = measure_daemon(&rt, &plugins, n, slots, slots == 1);
            daemon.push(t);
            if let Some(l) = l {
                seq_daemon.push(l);
            }
            if slots == 1 {
                rss.push(r.0 as f64);
            }
            rss_after.push((slots, r.1));
        }
        // Each round measures both back to back, so the ratio is taken per round (the machine's
        // speed drifts between rounds) and its median printed.
        let (r, d) = (median(raw.clone()), median(daemon.clone()));
        let ratio = median(raw.iter().zip(&daemon).map(|(r, d)| d / r).collect());
        println!(
            "{:<28}{:>12.0}{:>12.0}{:>9.0}%   (rounds: raw {:?}, daemon {:?})",
            format!("jobs/s, {slots} slot(s)"),
            r,
            d,
            ratio * 100.0,
            raw.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
            daemon.iter().map(|v| v.round() as u64).collect::<Vec<_>>()
        );
    }
    if seq_raw.is_empty() || seq_daemon.is_empty() {
        println!("targets: 1 slot >= 3000 jobs/s and >= 60% of raw; 8 slots >= 50% of raw");
        return;
    }
    let pick = |v: &[(Duration, Duration, f64)], f: fn(&(Duration, Duration, f64)) -> f64| {
        median(v.iter().map(f).collect())
    };
    let (rr, dr) = (pick(&seq_raw, |x| x.2), pick(&seq_daemon, |x| x.2));
    let seq_ratio = median(
        seq_raw
            .iter()
            .zip(&seq_daemon)
            .map(|(r, d)| d.2 / r.2)
            .collect(),
    );
    println!(
        "{:<28}{:>12.0}{:>12.0}{:>9.0}%",
        "jobs/s, one at a time",
        rr,
        dr,
        seq_ratio * 100.0
    );
    let (rm, dm) = (
        pick(&seq_raw, |x| x.0.as_micros() as f64),
        pick(&seq_daemon, |x| x.0.as_micros() as f64),
    );
    println!(
        "{:<28}{:>10.0}µs{:>10.0}µs   added {:.0} µs",
        "median round trip, idle",
        rm,
        dm,
        dm - rm
    );
    println!(
        "{:<28}{:>10.0}µs{:>10.0}µs",
        "p99 round trip, idle",
        pick(&seq_raw, |x| x.1.as_micros() as f64),
        pick(&seq_daemon, |x| x.1.as_micros() as f64)
    );
    let mut after: Vec<String> = Vec::new();
    for slots in slot_counts() {
        let most = rss_after
            .iter()
            .filter(|(s, _)| *s == slots)
            .map(|(_, kb)| *kb)
            .max()
            .unwrap_or(0);
        after.push(format!("{:.1} MB ({slots} slot(s))", most as f64 / 1024.0));
    }
    println!(
        "idle daemon RSS: {:.1} MB (target <= 20 MB); right after the load, at most: {}",
        median(rss) / 1024.0,
        after.join(", ")
    );
    println!("targets: 1 slot >= 3000 jobs/s and >= 60% of raw; 8 slots >= 50% of raw");
    process_mode(&rt, &plugins, dm);
}

/// The cost of `job_isolation: "process"`: the same no-op jobs, each in a child process,
/// against `in_process_us`, the in-process median round trip measured above.
fn process_mode(rt: &tokio::runtime::Runtime, plugins: &PluginDir, in_process_us: f64) {
    let n: usize = std::env::var("TH_BENCH_PROCESS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(10);
    let (t, l, _) = measure_daemon_in(rt, plugins, (n, n), 1, true, "process");
    let (median, p99, rate) = l.unwrap_or_default();
    let cost_ms = (median.as_micros() as f64 - in_process_us) / 1000.0;
    println!(
        "process mode ({n} jobs): {t:.0} jobs/s saturating 1 slot, {rate:.0} jobs/s one at a \
         time; median round trip {:.2} ms (p99 {:.2} ms)",
        median.as_micros() as f64 / 1000.0,
        p99.as_micros() as f64 / 1000.0
    );
    println!(
        "process mode costs {cost_ms:.2} ms per job more than in-process (default \"process\" \
         if under 5 ms)"
    );
}
