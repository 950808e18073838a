//! `publish_logs` of type `s3` against a real S3-compatible server started here (moto's server,
//! from the test venv: `scripts/setup-test-env.sh` installs it): a job run by the real daemon
//! through gearmand has its results uploaded before Zuul hears of it, and the URL Zuul gets
//! serves them; a store that cannot be reached, refuses the keys part-way or cannot take a file
//! ends the job in an infrastructure error naming what was left; the keys appear nowhere.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster_tests::{
    enqueue, free_port, script, test_venv_dir, text, Daemon, JobServer, PluginDir, ServerKind,
    Setup,
};

const ACCESS_KEY_ID: &str = "AKIATHTESTKEY0000001";
const SECRET_KEY: &str = "th-test-secret/Key+do-not-publish-8f3a";

/// moto's S3 server on a port of its own, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With `env` set for the server (moto's settings).
    fn start_with(env: &[(&str, &str)]) -> Self {
        let bin = test_venv_dir().join("bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup-test-env.sh",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let started = Instant::now();
        while http(moto.port, "GET", "/moto-api/", b"").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A bucket whose objects anyone may read (a bucket policy, as a logs server has: the
    /// daemon uploads with its keys, reviewers read without any).
    fn create_bucket(&self, bucket: &str) {
        let (status, body) = http(self.port, "PUT", &format!("/{bucket}"), b"").unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": format!("arn:aws:s3:::{bucket}/*"),
            }],
        });
        let (status, body) = http(
            self.port,
            "PUT",
            &format!("/{bucket}?policy"),
            policy.to_string().as_bytes(),
        )
        .unwrap();
        assert!(
            status == 200 || status == 204,
            "{status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// From now on, the server accepts `actions` more requests, then only signed ones from keys
    /// it knows (none: every later request is refused with 403).
    fn refuse_keys_after(&self, actions: &str) {
        let (status, _) = http(
            self.port,
            "POST",
            "/moto-api/reset-auth",
            actions.as_bytes(),
        )
        .unwrap();
        assert_eq!(status, 200);
    }

    /// An IAM user's new access key: (id, secret). The request's scope names IAM (moto sends
    /// it there); moto does not check its signature while auth is off.
    fn create_access_key(&self, user: &str) -> (String, String) {
        let auth =
            "AWS4-HMAC-SHA256 Credential=AKIAUNCHECKED/20260101/us-east-1/iam/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let iam = |action: &str| {
            let body = format!("Action={action}&UserName={user}&Version=2010-05-08");
            let (status, body) = http_with(
                self.port,
                "POST",
                "/",
                &[
                    ("Authorization", auth),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .unwrap();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, 200, "{action}: {body}");
            body
        };
        iam("CreateUser");
        let key = iam("CreateAccessKey");
        let tag = |name: &str| {
            key.split(&format!("<{name}>"))
                .nth(1)
                .and_then(|s| s.split(&format!("</{name}>")).next())
                .unwrap()
                .to_string()
        };
        (tag("AccessKeyId"), tag("SecretAccessKey"))
    }

    /// How many multipart uploads of `bucket` are started and neither completed nor aborted.
    fn open_uploads(&self, bucket: &str) -> usize {
        let (status, body) = http(self.port, "GET", &format!("/{bucket}?uploads"), b"").unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "{body}");
        body.matches("<Upload>").count()
    }

    /// The listing of `bucket` (ListObjectsV2's XML).
    fn listing(&self, bucket: &str) -> String {
        let (status, body) =
            http(self.port, "GET", &format!("/{bucket}?list-type=2"), b"").unwrap();
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Every key in `bucket`, sorted (moto lists without signatures while auth is off).
    fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) =
            http(self.port, "GET", &format!("/{bucket}?list-type=2"), b"").unwrap();
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: the status and the body (`None` if nothing
/// answers).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    http_with(port, method, path, &[], body)
}

/// [`http`] with more headers.
fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    Some((status, body))
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// `http://127.0.0.1:PORT/path…` → (port, path).
fn split_url(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, path) = rest.split_once('/').unwrap();
    (port.parse().unwrap(), format!("/{path}"))
}

/// Every regular file under `dir` (relative names), the work dir left out.
fn local_files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let kind = e.file_type().unwrap();
        if kind.is_dir() && !(rel.is_empty() && name == "work") {
            local_files(&e.path(), &child, out);
        } else if kind.is_file() {
            out.push((child, e.path()));
        }
    }
}

fn s3_config(endpoint: &str, bucket: &str, extra: Value) -> Value {
    let mut publish = json!({
        "type": "s3",
        "bucket": bucket,
        "endpoint": endpoint,
        "region": "eu-west-1",
        "prefix": "ci-logs/",
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_KEY,
        "retries": 2,
    });
    if let (Some(p), Value::Object(extra)) = (publish.as_object_mut(), extra) {
        p.extend(extra);
    }
    publish
}

/// A shell_script job that writes a report, a nested file and a line holding the secret key
/// (a job that prints a credential must not publish it).
fn shell_setup(publish: Value, body: &str) -> (PluginDir, Setup, tempfile::TempDir) {
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let scripts = tempfile::tempdir().unwrap();
    let path = script(scripts.path(), "job.sh", body);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "jobs": [{"name": "build:shelly", "shell_script": path, "timeout": 60}],
            "publish_logs": publish,
            "debug_log": "debug.log",
        }),
    );
    (plugins, setup, scripts)
}

const JOB: &str = "#!/bin/sh\n\
echo \"report for $ZUUL_PROJECT\"\n\
echo 'leak: th-test-secret/Key+do-not-publish-8f3a'\n\
mkdir -p \"$TH_RESULTS_DIR/nested\"\n\
printf '<html><body>report</body></html>\\n' > \"$TH_RESULTS_DIR/index.html\"\n\
printf 'nested\\n' > \"$TH_RESULTS_DIR/nested/deep.txt\"\n";

/// Sets a top-level key of the setup's config.
fn set_config(setup: &Setup, key: &str, value: Value) {
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&setup.config).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&setup.config, cfg.to_string()).unwrap();
}

/// Runs the job with `LOG_PATH=log_path`, which fails (exit status 1): its output and its
/// result.
fn run_failing(setup: &Setup, log_path: &str) -> (String, String) {
    let param = format!("LOG_PATH={log_path}");
    let out = setup.run(&["run-job", "build:shelly", "--param", &param]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let result = t
        .lines()
        .find_map(|l| l.strip_prefix("result: "))
        .unwrap()
        .to_string();
    eprintln!("result: {result}");
    (t, result)
}

/// No text holds either key.
fn assert_no_keys(what: &str, texts: &[(String, String)]) {
    for (name, t) in texts {
        assert!(
            !t.contains(SECRET_KEY),
            "{what}: {name} holds the secret key:\n{t}"
        );
        assert!(
            !t.contains(ACCESS_KEY_ID),
            "{what}: {name} holds the access key id:\n{t}"
        );
    }
}

fn read_all(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    local_files(dir, "", &mut files);
    files
        .into_iter()
        .map(|(rel, p)| {
            (
                rel,
                String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn a_job_s_results_are_uploaded_and_open_at_the_url_zuul_gets() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let (_p, setup, _s) = shell_setup(s3_config(&moto.endpoint(), "th-logs", json!({})), JOB);
    let server = JobServer::start(ServerKind::Gearmand);
    set_config(&setup, "gearman_servers", json!([server.addr()]));
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:shelly", Duration::from_secs(30));

    let log_path = "45/12345/3/check/shelly/a1b2c3";
    let o = enqueue(
        &server.addr(),
        "build:shelly",
        &[
            "--param",
            "ZUUL_PROJECT=example/shop",
            "--param",
            &format!("LOG_PATH={log_path}"),
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}\n{}", daemon.log_text());
    assert!(t.contains("result: SUCCESS"), "{t}");
    let url = t
        .lines()
        .find_map(|l| l.strip_prefix("url: "))
        .unwrap()
        .to_string();
    // The job left a report page (index.html), so the URL Zuul gets is that page's, under
    // the path-style URL of the job's prefix.
    assert_eq!(
        url,
        format!("{}/th-logs/ci-logs/{log_path}/index.html", moto.endpoint()),
        "the URL Zuul gets is the report page under the path-style URL of the job's prefix"
    );
    let report_url = url.clone();
    let url = url.trim_end_matches("index.html").to_string();

    // Every file of the results is at the URL, byte for byte (the secret key cut out).
    let results = setup.jobs_dir().join(log_path);
    let mut files = Vec::new();
    local_files(&results, "", &mut files);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "job.json",
        "index.html",
        "nested/deep.txt",
        "shell_script.log",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let (port, base) = split_url(&url);
    for (rel, path) in &files {
        let (status, body) = http(port, "GET", &format!("{base}{rel}"), b"").unwrap();
        assert_eq!(
            status,
            200,
            "{url}{rel}: {} {:?}",
            String::from_utf8_lossy(&body),
            moto.keys("th-logs")
        );
        let local = std::fs::read(path).unwrap();
        let local = String::from_utf8_lossy(&local).replace(SECRET_KEY, "***");
        assert_eq!(String::from_utf8_lossy(&body), local, "{url}{rel}");
    }
    let log = String::from_utf8_lossy(&std::fs::read(results.join("shell_script.log")).unwrap())
        .into_owned();
    assert!(log.contains("report for example/shop"), "{log}");
    // The job printed the key; the daemon masked it in the results before publishing them
    // (the storage keys are among the secrets masked in every results file).
    assert!(log.contains("leak: ***"), "the job printed the key: {log}");
    assert!(!log.contains(SECRET_KEY), "{log}");
    // Nothing else is there: no marker of an unfinished upload, no work dir.
    let keys = moto.keys("th-logs");
    let mut expected: Vec<String> = files
        .iter()
        .map(|(n, _)| format!("ci-logs/{log_path}/{n}"))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);

    // The published record names the URL; neither key is in what the daemon wrote or logged.
    let record: Value = serde_json::from_slice(
        &http(port, "GET", &format!("{base}job.json"), b"")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(record["url"], report_url.as_str());
    let mut texts = vec![("daemon log".to_string(), daemon.log_text())];
    texts.extend(read_all(setup.dir.path()).into_iter().filter(|(n, _)| {
        // The config holds the keys by design; the job's own log holds what the script printed.
        n != "config.json" && !n.ends_with("shell_script.log")
    }));
    let published: Vec<(String, String)> = files
        .iter()
        .map(|(rel, _)| {
            let body = http(port, "GET", &format!("{base}{rel}"), b"").unwrap().1;
            (rel.clone(), String::from_utf8_lossy(&body).into_owned())
        })
        .collect();
    texts.extend(published);
    texts.push(("enqueue output".into(), t));
    assert_no_keys("after a published job", &texts);
}

#[test]
fn an_unreachable_store_is_retried_then_ends_the_job_as_infrastructure() {
    let closed = free_port();
    let (_p, setup, _s) = shell_setup(
        s3_config(&format!("http://127.0.0.1:{closed}"), "th-logs", json!({})),
        JOB,
    );
    let started = Instant::now();
    let (t, result) = run_failing(&setup, "7/check/x");
    assert!(
        result.starts_with(
            "ERROR - infrastructure: cannot write the job's results: cannot publish the job's logs to \
             s3://th-logs/ci-logs/7/check/x/: cannot upload ci-logs/7/check/x/PUBLISHING-INCOMPLETE.txt (3 tries): "
        ),
        "{result}"
    );
    assert!(
        result.to_lowercase().contains("connection refused"),
        "{result}"
    );
    // Two retries, 0.5 s then 1 s apart.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // run-job logs to its stderr.
    assert_eq!(t.matches("trying again in").count(), 2, "{t}");
    assert_no_keys("unreachable store", &[("output".into(), t)]);
}

#[test]
fn keys_refused_part_way_leave_a_marker_and_say_so_without_showing_the_keys() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let (_p, setup, _s) = shell_setup(
        s3_config(&moto.endpoint(), "th-logs", json!({"retries": 1})),
        JOB,
    );
    // The marker and the first file go up; then the server checks the keys, which it does not
    // know: the next uploads and every removal are refused.
    moto.refuse_keys_after("2");
    let (t, result) = run_failing(&setup, "8/check/y");
    assert!(
        result.starts_with(
            "ERROR - infrastructure: cannot write the job's results: cannot publish the job's logs to \
             s3://th-logs/ci-logs/8/check/y/: cannot upload ci-logs/8/check/y/job.json (1 try; \
             retrying cannot help): access denied, the store does not know the access key: check \
             publish_logs.access_key_id; the store said: "
        ),
        "{result}"
    );
    assert!(
        result.contains("403 Forbidden: InvalidAccessKeyId"),
        "{result}"
    );
    // A refusal is not tried again, nor is its clean-up.
    assert!(!t.contains("trying again in"), "{t}");
    assert!(
        result.ends_with("they stay beside the marker ci-logs/8/check/y/PUBLISHING-INCOMPLETE.txt"),
        "{result}"
    );
    assert!(
        result.contains("; 1 object(s) uploaded could not be removed ("),
        "{result}"
    );
    moto.refuse_keys_after("inf");
    let keys = moto.keys("th-logs");
    assert_eq!(
        keys,
        [
            "ci-logs/8/check/y/PUBLISHING-INCOMPLETE.txt",
            "ci-logs/8/check/y/index.html"
        ]
    );
    let (status, marker) = http(
        moto.port,
        "GET",
        "/th-logs/ci-logs/8/check/y/PUBLISHING-INCOMPLETE.txt",
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&marker).contains("incomplete"));
    // The server's refusal quotes the access key id: it is cut out of the result and the logs.
    let mut texts = vec![("output".to_string(), t)];
    texts.extend(
        read_all(&setup.jobs_dir())
            .into_iter()
            .filter(|(n, _)| !n.ends_with("shell_script.log")),
    );
    assert_no_keys("keys refused", &texts);
}

#[test]
fn a_file_the_store_cannot_name_has_the_upload_removed() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let body = format!("{JOB}printf x > \"$TH_RESULTS_DIR/zz$(printf '\\001')\"\n");
    let (_p, setup, _s) = shell_setup(s3_config(&moto.endpoint(), "th-logs", json!({})), &body);
    let (_, result) = run_failing(&setup, "9/check/z");
    assert!(
        result.contains("/jobs/9/check/z/zz\\u{1}: not a valid object name (control characters"),
        "{result}"
    );
    assert!(
        result.ends_with("; the 5 object(s) uploaded were removed"),
        "{result}"
    );
    assert_eq!(moto.keys("th-logs"), Vec::<String>::new());
}

#[test]
fn check_config_writes_and_removes_one_object_with_the_keys() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let (_p, setup, _s) = shell_setup(s3_config(&moto.endpoint(), "th-logs", json!({})), JOB);
    set_config(&setup, "gearman_servers", json!(["127.0.0.1:4730"]));
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(": OK (1 job(s): build:shelly)"), "{t}");
    assert_eq!(
        moto.keys("th-logs"),
        Vec::<String>::new(),
        "the check object is removed"
    );

    let config = setup.config.display().to_string();
    let publish = s3_config(&moto.endpoint(), "th-missing", json!({}));
    set_config(&setup, "publish_logs", publish);
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "error: {config}: publish_logs: cannot write to s3://th-missing/ci-logs/: cannot upload \
             ci-logs/.turbo-hipster-check (1 try; retrying cannot help): no such bucket: check \
             publish_logs.bucket (and endpoint, region); the store said: "
        )),
        "{t}"
    );
    assert!(t.contains("NoSuchBucket"), "{t}");

    set_config(
        &setup,
        "publish_logs",
        s3_config(&moto.endpoint(), "th-logs", json!({})),
    );
    moto.refuse_keys_after("0");
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("403 Forbidden: InvalidAccessKeyId"), "{t}");
    assert_no_keys("check-config", &[("output".into(), t)]);
}

#[test]
fn a_wrong_secret_key_fails_at_once_saying_what_to_fix() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let (key_id, real_secret) = moto.create_access_key("th-uploader");
    assert_ne!(real_secret, SECRET_KEY);
    // A key the store knows, signed with the wrong secret; up to 10 retries would pause
    // 0.5 + 1 + 2 + 4 + 8 + 5 × 10 s.
    let (_p, setup, _s) = shell_setup(
        s3_config(
            &moto.endpoint(),
            "th-logs",
            json!({"access_key_id": key_id, "retries": 10}),
        ),
        JOB,
    );
    moto.refuse_keys_after("0");
    let started = Instant::now();
    let (t, result) = run_failing(&setup, "10/check/w");
    let took = started.elapsed();
    assert!(
        result.starts_with(
            "ERROR - infrastructure: cannot write the job's results: cannot publish the job's logs to \
             s3://th-logs/ci-logs/10/check/w/: cannot upload \
             ci-logs/10/check/w/PUBLISHING-INCOMPLETE.txt (1 try; retrying cannot help): access \
             denied, the request's signature does not match: check publish_logs.secret_access_key; \
             the store said: "
        ),
        "{result}"
    );
    assert!(
        result.contains("403 Forbidden: SignatureDoesNotMatch"),
        "{result}"
    );
    assert!(!t.contains("trying again in"), "{t}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    eprintln!("wrong secret: run-job took {took:?}");
    moto.refuse_keys_after("inf");
    assert_eq!(moto.keys("th-logs"), Vec::<String>::new());
    let mut texts = vec![("output".to_string(), t)];
    texts.extend(
        read_all(&setup.jobs_dir())
            .into_iter()
            .filter(|(n, _)| !n.ends_with("shell_script.log")),
    );
    assert_no_keys("wrong secret", &texts);
    for (name, text) in &texts {
        assert!(
            !text.contains(&key_id),
            "{name} holds the access key id:\n{text}"
        );
    }
}

/// 20 MiB and a bit of random bytes, then the secret key: more than the 16 MiB above which a
/// file goes up in parts (three: 8 MiB, 8 MiB, the rest) and is masked a block at a time.
const BIG_JOB: &str = "head -c 20983465 /dev/urandom > \"$TH_RESULTS_DIR/big.bin\"\n\
printf 'leak: th-test-secret/Key+do-not-publish-8f3a' >> \"$TH_RESULTS_DIR/big.bin\"\n";

#[test]
fn a_big_file_goes_up_in_parts_byte_for_byte() {
    let moto = Moto::start();
    moto.create_bucket("th-logs");
    let (_p, setup, _s) = shell_setup(
        s3_config(&moto.endpoint(), "th-logs", json!({})),
        &format!("{JOB}{BIG_JOB}"),
    );
    let out = setup.run(&["run-job", "build:shelly", "--param", "LOG_PATH=11/check/b"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("result: SUCCESS"), "{t}");
    let local = std::fs::read(setup.jobs_dir().join("11/check/b/big.bin")).unwrap();
    // The key at its end was masked, in place, before the upload.
    assert_eq!(local.len(), 20_983_465 + "leak: ***".len());
    assert!(local.ends_with(b"leak: ***"));
    let (status, body) =
        http(moto.port, "GET", "/th-logs/ci-logs/11/check/b/big.bin", b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        body == local,
        "the object differs from the file ({} bytes)",
        body.len()
    );
    assert!(!body
        .windows(SECRET_KEY.len())
        .any(|w| w == SECRET_KEY.as_bytes()));
    // A multipart object's ETag ends in its number of parts; the small files went up whole.
    let listing = moto.listing("th-logs");
    let etag = |key: &str| {
        listing
            .split(&format!("<Key>ci-logs/11/check/b/{key}</Key>"))
            .nth(1)
            .and_then(|s| s.split("<ETag>").nth(1))
            .and_then(|s| s.split("</ETag>").next())
            .unwrap()
            .replace("&quot;", "")
            .replace('"', "")
    };
    assert!(etag("big.bin").ends_with("-3"), "{listing}");
    assert!(!etag("index.html").contains('-'), "{listing}");
    assert_eq!(moto.open_uploads("th-logs"), 0);
    assert!(!moto
        .keys("th-logs")
        .iter()
        .any(|k| k.ends_with("PUBLISHING-INCOMPLETE.txt")));
}

#[test]
fn a_multipart_upload_that_fails_is_aborted_and_the_job_s_objects_removed() {
    // Parts must be 9 MiB here: the 8 MiB ones are refused when the upload completes (400
    // EntityTooSmall, not worth retrying).
    let moto = Moto::start_with(&[("S3_UPLOAD_PART_MIN_SIZE", "9437184")]);
    moto.create_bucket("th-logs");
    // "a-first.txt" goes up before "big.bin", which fails.
    let body = format!("{JOB}{BIG_JOB}printf a > \"$TH_RESULTS_DIR/a-first.txt\"\n");
    let (_p, setup, _s) = shell_setup(s3_config(&moto.endpoint(), "th-logs", json!({})), &body);
    let (t, result) = run_failing(&setup, "12/check/m");
    assert!(
        result.contains(
            "cannot complete the multipart upload of ci-logs/12/check/m/big.bin (1 try; retrying \
             cannot help): the store wants bigger parts than turbo-hipster's 8 MiB (all but the \
             last): "
        ),
        "{result}"
    );
    assert!(result.contains("EntityTooSmall"), "{result}");
    assert!(
        result.ends_with(
            " (the multipart upload was aborted); the 1 object(s) uploaded were removed"
        ),
        "{result}"
    );
    assert!(!t.contains("trying again in"), "{t}");
    assert_eq!(
        moto.open_uploads("th-logs"),
        0,
        "no multipart upload is left"
    );
    assert_eq!(moto.keys("th-logs"), Vec::<String>::new());
}
