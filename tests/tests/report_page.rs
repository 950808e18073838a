//! The gate's report page (`index.html`) in a real headless Chromium (Debian's `chromium`,
//! installed by `scripts/setup-test-env.sh`): the DOM after the page's script ran, the DOM
//! without JavaScript, a filtered view, no external asset (the browser runs in a network
//! namespace of its own: offline), and a screenshot the test keeps
//! (`$CARGO_TARGET_TMPDIR/report_page/report.png`; `TH_UPDATE_DOCS_SCREENSHOT=1` copies it to
//! `docs/report.png`). Then the URL Zuul gets, through gearmand and local publishing served
//! over HTTP, opens the page; and nothing published holds a secret of the job.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster_tests::db_servers;
use turbo_hipster_tests::gate::{uuid, World, SQLITE_MIGRATE_PY};
use turbo_hipster_tests::{
    enqueue_example_change, example_repo, free_port, root, text, Daemon, JobServer, PluginDir,
    ServerKind, Setup,
};

/// `chromium`, or a failure saying how to install it.
fn chromium() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!("chromium is not installed: run `bash scripts/setup-test-env.sh` (as root)");
}

/// Runs headless Chromium on `url` with `args`; `offline`: in a network namespace of its own
/// (nothing but a dead loopback), so that any request for an external asset fails.
fn browse(url: &str, args: &[&str], offline: bool) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = if offline {
        let mut c = Command::new("unshare");
        c.arg("-n").arg(chromium());
        c
    } else {
        Command::new(chromium())
    };
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--virtual-time-budget=2000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dump_dom(url: &str) -> String {
    browse(url, &["--dump-dom"], url.starts_with("file://"))
}

/// A copy of the page at `index` without its script element, in `dir`: the page as a browser
/// without JavaScript builds it. (Chromium's `--blink-settings=scriptEnabled=false` also stops
/// the script `--dump-dom` itself needs: its output is empty.)
fn without_script(index: &Path, dir: &Path) -> String {
    let page = std::fs::read_to_string(index).unwrap();
    let start = page.find("<script>").expect("a script element");
    let end = page.find("</script>").unwrap() + "</script>".len();
    assert_eq!(page.matches("<script").count(), 1, "one script element");
    let copy = dir.join("index-no-script.html");
    std::fs::write(&copy, format!("{}{}", &page[..start], &page[end..])).unwrap();
    format!("file://{}", copy.display())
}

/// The start tags in `dom` whose text contains `needle`.
fn tags_with<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    dom.match_indices(needle)
        .filter_map(|(at, _)| {
            let start = if needle.starts_with('<') {
                at
            } else {
                dom[..at].rfind('<')?
            };
            let end = at + dom[at..].find('>')?;
            Some(&dom[start..=end])
        })
        .collect()
}

/// A project with a fast, a slow (1.5 s against a 1 s limit) and a fast migration, its change
/// run by `run-job` on SQLite.
fn warning_run() -> (World, turbo_hipster_tests::gate::JobRun) {
    let mut world = World::new(json!({}));
    world.project(
        "shop/report",
        &[
            ("tools/migrate.py", SQLITE_MIGRATE_PY),
            (
                "versions/001_items.py",
                "def upgrade(conn):\n    conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')\n",
            ),
        ],
    );
    world.dataset(
        "shop.big",
        json!({
            "project": "shop/report",
            "engine": "sqlite",
            "seed_data": "seed.sql",
            "migration": {
                "tool": ["python3", "tools/migrate.py", "{db_url}"],
                "log_format": "sqlalchemy-migrate",
            },
            "expected_version": {"highest_numbered": "versions"},
            "maximum_migration_times": {"default": 1},
        }),
        &[("seed.sql", "CREATE TABLE placeholder (id INTEGER);\n")],
    );
    let change = world.propose(
        "shop/report",
        &[
            (
                "versions/002_price.py",
                "import time\n\ndef upgrade(conn):\n    print('adding <price> & stock', flush=True)\n    time.sleep(1.5)\n    conn.execute('ALTER TABLE items ADD COLUMN price INTEGER')\n",
            ),
            (
                "versions/003_stock.py",
                "def upgrade(conn):\n    conn.execute('ALTER TABLE items ADD COLUMN stock INTEGER')\n",
            ),
        ],
    );
    let run = world.run("shop/report", &change);
    (world, run)
}

#[test]
fn the_report_page_in_chromium() {
    let (_world, run) = warning_run();
    assert_eq!(
        run.result,
        "WARNING - Migration 1->2 took too long",
        "{}",
        run.describe()
    );
    // The URL Zuul would get (no publishing: the job's directory) is the page.
    let url = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report line\n{}", run.describe()))
        .to_string();
    let index = run.results.join("index.html");
    assert_eq!(url, format!("file://{}", index.display()));
    let job: Value = serde_json::from_str(&run.file("job.json")).unwrap();
    assert_eq!(job["url"], url.as_str());

    // Self-contained: nothing loaded from anywhere (the offline browser below proves it too).
    let source = run.file("index.html");
    for external in [
        "src=",
        "<link",
        "@import",
        "url(",
        "href=\"http",
        "href=\"//",
    ] {
        assert!(!source.contains(external), "{external} in the page");
    }

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_page");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("index.html"), &source).unwrap();

    // With JavaScript.
    let dom = dump_dom(&url);
    let verdict = tags_with(&dom, "id=\"verdict\"");
    assert_eq!(verdict.len(), 1, "{dom}");
    assert!(verdict[0].contains("verdict warn"), "{}", verdict[0]);
    assert!(dom.contains("WARNING - Migration 1-&gt;2 took too long"));
    // The datasets table: one row, the dataset's name escaped, status, engine, 3 migrations,
    // the slowest against its limit.
    let row_at = dom.find("<tr id=\"row-shop_big\">").expect("dataset row");
    let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").unwrap()];
    assert!(row.contains(">shop.big</a>"), "{row}");
    assert!(
        row.contains("<span class=\"warning\">warning</span>"),
        "{row}"
    );
    assert!(row.contains("<td>sqlite</td>"), "{row}");
    assert!(row.contains("<td class=\"n\">3</td>"), "{row}");
    assert!(row.contains("1→2 1."), "{row}");
    assert!(row.contains("/ 1 s"), "{row}");
    // The failing migration is linked from the table to its start line in the log, which
    // exists, is highlighted and reads `1 -> 2...`.
    let link = tags_with(row, "class=\"failing\"");
    std::fs::write(out_dir.join("dom.html"), &dom).unwrap();
    assert_eq!(link.len(), 1, "{row}");
    let target = link[0]
        .split("href=\"#")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(target.starts_with("shop_big-L"), "{target}");
    let line_at = dom
        .find(&format!("id=\"{target}\""))
        .unwrap_or_else(|| panic!("no line {target}"));
    let line_tag = &dom[dom[..line_at].rfind('<').unwrap()..];
    assert!(
        line_tag.starts_with("<span class=\"l f\""),
        "{line_tag:.80}"
    );
    assert!(line_tag[..300].contains("1 -&gt; 2..."), "{line_tag:.300}");
    // Every log line has its anchor and number; the output's HTML is text.
    let log = run.file("shop.big.log");
    let lines = log.lines().count();
    assert!(lines > 5);
    for n in 1..=lines {
        assert!(
            dom.contains(&format!("id=\"shop_big-L{n}\"")),
            "line {n} has no anchor"
        );
    }
    assert!(dom.contains("adding &lt;price&gt; &amp; stock"));
    assert!(!dom.contains("<price>"));
    // The timeline: a bar per migration, the slow one marked and linked.
    assert_eq!(tags_with(&dom, "<g class=\"mig").len(), 3, "{dom}");
    assert_eq!(tags_with(&dom, "<g class=\"mig failing\"").len(), 1);
    assert_eq!(tags_with(&dom, "class=\"lim\"").len(), 3);
    assert!(dom.contains(&format!("<a href=\"#{target}\"><g class=\"mig failing\"")));
    // The script ran: the filter box is shown, no line hidden.
    let filter = tags_with(&dom, "class=\"filter\"");
    assert_eq!(filter.len(), 1);
    assert!(!filter[0].contains("hidden"), "{}", filter[0]);
    assert!(!dom.contains("display: none"));

    // Without JavaScript: the same content, the filter box hidden.
    let plain = dump_dom(&without_script(&index, &run.results));
    let filter = tags_with(&plain, "class=\"filter\"");
    assert!(filter[0].contains("hidden"), "{}", filter[0]);
    for n in 1..=lines {
        assert!(plain.contains(&format!("id=\"shop_big-L{n}\"")));
    }
    assert!(plain.contains("WARNING - Migration 1-&gt;2 took too long"));
    assert_eq!(tags_with(&plain, "<g class=\"mig failing\"").len(), 1);
    assert!(!plain.contains("display: none"));

    // Filtered: only the lines with the text show.
    let filtered = dump_dom(&format!("{url}?filter=final%20schema"));
    let shown: Vec<&str> = tags_with(&filtered, "<span class=\"l")
        .into_iter()
        .filter(|t| !t.contains("display: none"))
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    for tag in &shown {
        let at = filtered.find(tag).unwrap();
        let line = &filtered[at..at + filtered[at..].find("</span>\n").unwrap()];
        assert!(
            line.to_lowercase().contains("final schema version"),
            "{line}"
        );
    }
    assert_eq!(
        tags_with(&filtered, "<span class=\"l").len(),
        lines,
        "every line is still in the page"
    );

    // A screenshot, kept.
    let png = out_dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1000",
        ],
        true,
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 1000));
    assert!(bytes.len() > 20_000, "an empty page? {} bytes", bytes.len());
    println!("screenshot: {}", png.display());
    if std::env::var_os("TH_UPDATE_DOCS_SCREENSHOT").is_some() {
        std::fs::copy(&png, root().join("docs/report.png")).unwrap();
    }
}

/// `python3 -m http.server` on `dir`, stopped on drop.
struct HttpServer(std::process::Child);

impl HttpServer {
    fn start(dir: &Path, port: u16) -> Self {
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no http server"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer(child)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_url_zuul_gets_opens_the_report_over_http() {
    let www = tempfile::tempdir().unwrap();
    let published = www.path().join("logs");
    let port = free_port();
    let _http = HttpServer::start(www.path(), port);
    let (repos, zuul_ref) = example_repo(
        "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n",
    );
    let plugins = PluginDir::new();
    plugins.add_shipped("gate_real_db_upgrade");
    let server = JobServer::start(ServerKind::Gearmand);
    let prepend = format!("http://127.0.0.1:{port}/logs/");
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "publish_logs": {"type": "local", "path": published, "prepend_url": prepend},
            "jobs": [{
                "name": "build:gate-real-db-upgrade",
                "plugin": "gate_real_db_upgrade",
                "datasets_dir": root().join("etc/example/datasets"),
                "engine": "sqlite",
            }]
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
    let uuid = uuid();
    let log_path = format!("check/report/{}", &uuid[..8]);
    let out = enqueue_example_change(
        &server.addr(),
        repos.path(),
        &zuul_ref,
        &[("ZUUL_UUID", &uuid), ("LOG_PATH", &log_path)],
        300,
    );
    let t = text(&out);
    assert!(t.contains("result: SUCCESS"), "{t}\n{}", daemon.log_text());
    // The final WORK_DATA's url, as Zuul reads it.
    let url = t
        .lines()
        .find_map(|l| l.strip_prefix("url: "))
        .unwrap_or_else(|| panic!("no url in:\n{t}"));
    assert_eq!(url, format!("{prepend}{log_path}/index.html"));
    assert!(published.join(&log_path).join("index.html").is_file());
    // Served over HTTP, it is the report of this build.
    let dom = dump_dom(url);
    let verdict = tags_with(&dom, "id=\"verdict\"");
    assert!(verdict[0].contains("verdict ok"), "{dom}");
    assert!(dom.contains(">SUCCESS</div>"), "{dom}");
    assert!(dom.contains("<tr id=\"row-example\">"), "{dom}");
    assert!(dom.contains("example/shop"));
    // Its links lead to the published files.
    for f in ["summary.json", "example.log", "job.json", "task_output.log"] {
        assert!(dom.contains(&format!("href=\"{f}\"")), "{f}");
        assert!(published.join(&log_path).join(f).is_file(), "{f}");
    }
    drop(daemon);
}

/// A PostgreSQL role with a password, dropped on drop.
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        db_servers::psql("postgres", &format!("DROP ROLE IF EXISTS {}", self.0));
    }
}

/// Every form a secret may take in a file.
fn forms(secret: &str) -> Vec<String> {
    let pct = |upper: bool| -> String {
        secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    let json = serde_json::to_string(secret).unwrap();
    vec![
        secret.to_string(),
        pct(true),
        pct(false),
        pct(true).replace("%20", "+"),
        json[1..json.len() - 1].to_string(),
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;"),
    ]
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn nothing_published_holds_a_secret() {
    let r = &uuid()[..8];
    let role = Role(format!("th_secret_{r}"));
    let password = format!("Pw@{r}:/ %&<\"x>'#?");
    db_servers::psql(
        "postgres",
        &format!(
            "CREATE ROLE {} LOGIN SUPERUSER PASSWORD '{}'",
            role.0,
            password.replace('\'', "''")
        ),
    );
    let token = format!("tok-{}", &uuid()[..12]);
    // The tool prints everything it is given: the connection URL, the password, the token
    // (passed to it as a build parameter), the password as JSON.
    const TOOL: &str = r#"import json, os, sys
print("url", sys.argv[1], flush=True)
print("password", sys.argv[2], flush=True)
print("json", json.dumps({"password": sys.argv[2]}), flush=True)
print("token", os.environ.get("SHOP_NOTE", ""), flush=True)
print("1 -> 2... ", flush=True)
print("done", flush=True)
print("Final schema version is 2", flush=True)
"#;
    let mut world = World::new(json!({
        "engine": "postgresql",
        "connection": {"host": "127.0.0.1", "port": 5432, "user": role.0, "password": password},
        "api_token": token,
        "secret_keys": ["api_token"],
        "pass_parameters": ["SHOP_NOTE"],
    }));
    let published = world.root.join("published");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&world.config).unwrap()).unwrap();
    config["publish_logs"] =
        json!({"type": "local", "path": published, "prepend_url": "http://logs.example/"});
    std::fs::write(&world.config, config.to_string()).unwrap();
    world.project(
        "shop/secret",
        &[("tools/migrate.py", TOOL), ("versions/001_x.py", "\n")],
    );
    world.dataset(
        "secret",
        json!({
            "project": "shop/secret",
            "seed_data": "seed.sql",
            "provisioning": "reload",
            "migration": {
                "tool": ["python3", "tools/migrate.py", "{db_url}", "{db_pass}"],
                "log_format": "sqlalchemy-migrate",
            },
        }),
        &[("seed.sql", "CREATE TABLE t (id INTEGER);\n")],
    );
    let change = world.propose("shop/secret", &[("versions/002_y.py", "\n")]);
    // The token also comes in as a build parameter: job.json and the summary record those.
    let log_path = format!("check/secret/{r}");
    let (child, _, _) = world.spawn(
        "shop/secret",
        &change,
        &[("SHOP_NOTE", &token), ("LOG_PATH", &log_path)],
    );
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(t.contains("result: SUCCESS"), "{t}");
    assert!(
        t.contains(&format!(
            "report: http://logs.example/{log_path}/index.html"
        )),
        "{t}"
    );
    let results = world.root.join("jobs").join(&log_path);
    let log = std::fs::read_to_string(results.join("secret.log")).unwrap();
    // The secrets were there (masked), and the run got far enough to print them.
    assert!(log.contains("[output] url postgresql"), "{log}");
    assert!(log.contains("[output] password ***"), "{log}");
    assert!(log.contains("[output] token ***"), "{log}");
    let mut files = Vec::new();
    walk(&published, &mut files);
    walk(&results, &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in [
        "index.html",
        "job.json",
        "secret.log",
        "summary.json",
        "task_output.log",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not published: {names:?}");
    }
    let mut searched = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        searched += bytes.len();
        for secret in [&password, &token] {
            for form in forms(secret) {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                    "{} holds a secret ({form:?})",
                    file.display()
                );
            }
        }
    }
    assert!(searched > 10_000, "searched {searched} bytes");
    assert!(!t.contains(&token) && !t.contains(&password), "{t}");
}
