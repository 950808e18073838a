//! scripts/package-deb.sh builds the Debian package from the debug build: its control fields,
//! conffiles and files are right, the binaries are stripped, the extracted daemon loads the
//! packaged plugins and runs the packaged example job on SQLite, and (as root) a real
//! install → upgrade → remove → purge round trip through `dpkg --root` into a temporary root
//! runs the maintainer scripts there: state directories made with their modes, an edited
//! config kept on upgrade, purge removing config, logs and mirrors but keeping datasets and
//! job history unless asked. Nothing is installed into `/`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};
use turbo_hipster_tests::gate::copy_tree;
use turbo_hipster_tests::{built, git, profile, root, text};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// `version` of `[workspace.package]` in the workspace's Cargo.toml.
fn workspace_version() -> String {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let section = &manifest[manifest.find("[workspace.package]").unwrap()..];
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("version"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

fn field(deb: &Path, name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// Runs the script once per test process (on the debug build, gzip: fast), into the test
/// target's temp dir; its output and the package.
fn package() -> &'static (Output, PathBuf) {
    static PACKAGE: OnceLock<(Output, PathBuf)> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        built();
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package_deb");
        let _ = std::fs::remove_dir_all(&out_dir);
        let out = run(Command::new("bash")
            .arg(root().join("scripts/package-deb.sh"))
            .args([
                "--no-build",
                "--profile",
                profile(),
                "--compression",
                "gzip",
            ])
            .arg("--out")
            .arg(&out_dir));
        let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());
        (out, deb)
    })
}

/// The package built by the script, checked by dpkg-deb, extracted and run.
#[test]
fn the_package_holds_the_right_files_and_its_daemon_runs_the_example_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, built_deb) = package();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package_deb");
    let version = workspace_version().replacen('-', "~", 1);
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let deb = out_dir.join(format!("turbo-hipster_{version}_{arch}.deb"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(deb.to_str().unwrap()),
        "the script names the package it built last\n{}",
        text(out)
    );
    assert_eq!(built_deb, &deb);
    assert!(deb.is_file(), "{} missing", deb.display());

    // --- control fields ---
    assert_eq!(field(&deb, "Package"), "turbo-hipster");
    assert_eq!(field(&deb, "Version"), version);
    assert_eq!(field(&deb, "Architecture"), arch);
    assert_eq!(field(&deb, "Section"), "devel");
    assert_eq!(field(&deb, "Priority"), "optional");
    assert!(field(&deb, "Maintainer").contains('@'));
    let description = field(&deb, "Description");
    assert!(
        description.starts_with("Gearman worker for Zuul"),
        "{description}"
    );
    assert!(description.contains("check-config"), "{description}");
    let depends = field(&deb, "Depends");
    let depends: Vec<&str> = depends.split(", ").collect();
    assert!(
        depends.iter().any(|d| d.starts_with("libc6 (>= ")),
        "{depends:?}: libc6 with a version, from dpkg-shlibdeps"
    );
    assert!(depends.contains(&"git"), "{depends:?}");
    for not_needed in ["python", "mariadb", "mysql", "postgres", "gearman"] {
        assert!(
            !depends.iter().any(|d| d.contains(not_needed)),
            "{depends:?} must not need {not_needed}"
        );
    }
    let recommends = field(&deb, "Recommends");
    assert!(recommends.contains("mariadb-client"), "{recommends}");
    assert!(recommends.contains("postgresql-client"), "{recommends}");
    let suggests = field(&deb, "Suggests");
    for s in [
        "gearman-job-server",
        "mariadb-server | postgresql",
        "python3",
    ] {
        assert!(suggests.contains(s), "{suggests} lacks {s}");
    }

    // --- control archive: conffiles, maintainer scripts ---
    let info = |member: &str| stdout(Command::new("dpkg-deb").arg("--info").arg(&deb).arg(member));
    let conffiles: Vec<String> = info("conffiles").lines().map(str::to_string).collect();
    assert_eq!(
        conffiles,
        [
            "/etc/init.d/turbo-hipster",
            "/etc/turbo-hipster/config.json"
        ]
    );
    for script in ["postinst", "prerm", "postrm"] {
        let body = info(script);
        assert!(body.starts_with("#!/bin/sh\n"), "{script}: {body}");
        assert!(body.contains("DPKG_ROOT"), "{script} honours DPKG_ROOT");
        let status = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&body)
            .status()
            .unwrap();
        assert!(status.success(), "{script} is not valid sh");
    }
    assert!(info("postinst").contains("check-config"));

    // --- data archive ---
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut entries = BTreeSet::new();
    for line in contents.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "root/root", "{line}: owned by root");
        let path = cols[5].trim_start_matches('.').to_string();
        assert!(
            !path.starts_with("/var"),
            "{line}: /var is made by postinst"
        );
        entries.insert((cols[0].to_string(), path));
    }
    for (mode, path) in [
        ("-rwxr-xr-x", "/usr/bin/turbo-hipster"),
        (
            "-rwxr-xr-x",
            "/usr/lib/turbo-hipster/plugins/gate_real_db_upgrade/libtask.so",
        ),
        (
            "-rwxr-xr-x",
            "/usr/lib/turbo-hipster/plugins/shell_script/libtask.so",
        ),
        ("-rw-r--r--", "/etc/turbo-hipster/config.json"),
        ("drwxr-xr-x", "/etc/turbo-hipster/conf.d/"),
        ("-rwxr-xr-x", "/etc/init.d/turbo-hipster"),
        ("-rw-r--r--", "/lib/systemd/system/turbo-hipster.service"),
        ("-rw-r--r--", "/usr/share/doc/turbo-hipster/copyright"),
        ("-rw-r--r--", "/usr/share/doc/turbo-hipster/changelog.gz"),
        (
            "-rw-r--r--",
            "/usr/share/doc/turbo-hipster/examples/datasets/example/config.json",
        ),
        ("drwxr-xr-x", "/"),
    ] {
        assert!(
            entries.contains(&(mode.to_string(), path.to_string())),
            "{mode} {path} not in the package:\n{contents}"
        );
    }

    // Installed-Size: KiB of what it holds, as dpkg counts it.
    let x = tmp.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let mut kib = 0;
    for entry in walk(&x) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        kib += if meta.is_dir() {
            1
        } else {
            meta.len().div_ceil(1024)
        };
    }
    let installed: u64 = field(&deb, "Installed-Size").parse().unwrap();
    assert_eq!(installed, kib, "Installed-Size");

    // Stripped: no debug sections, no static symbol table in the executable.
    let daemon = x.join("usr/bin/turbo-hipster");
    let plugin_dir = x.join("usr/lib/turbo-hipster/plugins");
    for elf in [
        daemon.clone(),
        plugin_dir.join("gate_real_db_upgrade/libtask.so"),
        plugin_dir.join("shell_script/libtask.so"),
    ] {
        let sections = stdout(Command::new("readelf").args(["-S", "--wide"]).arg(&elf));
        // (.debug_gdb_scripts is loaded code's data, not debug information.)
        assert!(
            !sections.contains(".debug_info"),
            "{} has debug info",
            elf.display()
        );
        assert!(
            !sections.contains(".symtab"),
            "{} has a symbol table",
            elf.display()
        );
    }
    let v = stdout(Command::new(&daemon).arg("--version"));
    assert_eq!(v.trim(), format!("turbo-hipster {}", workspace_version()));

    // --- the extracted daemon, its plugins and the packaged example ---
    let examples = x.join("usr/share/doc/turbo-hipster/examples");
    let script = turbo_hipster_tests::script(tmp.path(), "hello.sh", "#!/bin/sh\necho hello\n");
    let config = tmp.path().join("config.json");
    let jobs = tmp.path().join("jobs");
    std::fs::write(
        &config,
        serde_json::to_string_pretty(&json!({
            "jobs_working_dir": jobs,
            "git_working_dir": tmp.path().join("git"),
            "plugin_dirs": [plugin_dir],
            "jobs": [
                {"name": "build:gate-real-db-upgrade", "plugin": "gate_real_db_upgrade",
                 "datasets_dir": examples.join("datasets"), "engine": "sqlite"},
                {"name": "build:hello", "plugin": "shell_script", "shell_script": script},
            ],
        }))
        .unwrap(),
    )
    .unwrap();
    let listed = stdout(Command::new(&daemon).arg("-c").arg(&config).arg("plugins"));
    for needle in [
        "gate_real_db_upgrade\n",
        "shell_script\n",
        "jobs:        build:gate-real-db-upgrade",
        "jobs:        build:hello",
    ] {
        assert!(listed.contains(needle), "{needle} not in\n{listed}");
    }
    assert!(
        listed.contains(&plugin_dir.display().to_string()),
        "{listed}"
    );

    // The example project with its proposed change, published as Zuul's merger would.
    let upstream = tmp.path().join("upstream");
    let project = upstream.join("example/shop");
    copy_tree(&examples.join("project"), &project);
    git(&project, &["init", "-q"]);
    git(&project, &["add", "-A"]);
    git(
        &project,
        &["commit", "-q", "-m", "the shop, migrations 001 to 003"],
    );
    git(&project, &["checkout", "-q", "-b", "change"]);
    std::fs::write(
        project.join("migrations/004_add_loyalty_points.sql"),
        "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n",
    )
    .unwrap();
    git(&project, &["add", "-A"]);
    git(&project, &["commit", "-q", "-m", "loyalty points"]);
    let sha = git(&project, &["rev-parse", "HEAD"]);
    let zuul_ref = "refs/zuul/master/Zpackage";
    git(&project, &["update-ref", zuul_ref, &sha]);
    git(&project, &["checkout", "-q", "master"]);

    let out = Command::new(&daemon)
        .arg("-c")
        .arg(&config)
        .args(["run-job", "build:gate-real-db-upgrade"])
        .args(["--param", "ZUUL_PROJECT=example/shop"])
        .arg("--param")
        .arg(format!("ZUUL_URL={}", upstream.display()))
        .arg("--param")
        .arg(format!("ZUUL_REF={zuul_ref}"))
        .args(["--param", "ZUUL_BRANCH=master"])
        .arg("--param")
        .arg(format!("ZUUL_COMMIT={sha}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    let results = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("logs: file://"))
        .map(|p| PathBuf::from(p.trim_end_matches('/')))
        .unwrap_or_else(|| panic!("no logs line\n{t}"));
    let job: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["result"], "SUCCESS", "{t}");
    assert!(out.status.success(), "{t}");
    let summary = std::fs::read_to_string(results.join("summary.txt")).unwrap();
    assert!(
        summary.contains("3->4       add_loyalty_points")
            && summary.contains("final version 4, expected 4"),
        "the change's migration ran:\n{summary}"
    );
}

/// dpkg --root into a temporary root (as root only: dpkg sets owners): install, upgrade with
/// an edited config, remove, purge; the maintainer scripts act inside it through DPKG_ROOT.
#[test]
fn install_upgrade_remove_purge_in_a_temporary_root() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: dpkg --root needs root to set the owners of what it unpacks");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deb = &package().1;
    // The next version: the same package with a higher version (repacked: no second build).
    let v1 = field(deb, "Version");
    let v2 = format!("{v1}+next");
    let unpacked = tmp.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&unpacked));
    let control = unpacked.join("DEBIAN/control");
    let c = std::fs::read_to_string(&control).unwrap();
    std::fs::write(
        &control,
        c.replace(&format!("Version: {v1}\n"), &format!("Version: {v2}\n")),
    )
    .unwrap();
    let deb2 = tmp.path().join("next.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&unpacked)
        .arg(&deb2));

    let r = tmp.path().join("root");
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str], env: &[(&str, &str)]| -> Output {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .envs(env.iter().copied());
        run(&mut cmd)
    };
    let status = || {
        let out = Command::new("dpkg-query")
            .arg(format!("--root={}", r.display()))
            .args([
                "-W",
                "-f",
                "${Version} ${db:Status-Abbrev}",
                "turbo-hipster",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let state = r.join("var/lib/turbo-hipster");
    let config = r.join("etc/turbo-hipster/config.json");

    // Install: files, state directories and their modes.
    dpkg(&["-i", deb.to_str().unwrap()], &[]);
    assert_eq!(status(), format!("{v1} ii"));
    assert!(r.join("usr/bin/turbo-hipster").is_file());
    for d in ["", "/jobs", "/git", "/datasets", "/logs"] {
        let meta = std::fs::metadata(format!("{}{d}", state.display())).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o755, "var/lib/turbo-hipster{d}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "var/lib/turbo-hipster{d}");
    }
    let log = std::fs::metadata(r.join("var/log/turbo-hipster")).unwrap();
    assert_eq!(log.mode() & 0o7777, 0o2750);

    // The operator edits the config and has data; the upgrade keeps both (no prompt: stdin
    // is closed, a prompt would fail the upgrade).
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"max_concurrent_jobs\": 1", "\"max_concurrent_jobs\": 3");
    assert!(edited.contains("\"max_concurrent_jobs\": 3"));
    std::fs::write(&config, &edited).unwrap();
    std::fs::create_dir_all(state.join("datasets/mine")).unwrap();
    std::fs::write(state.join("datasets/mine/seed.sql"), "-- data\n").unwrap();
    std::fs::write(state.join("jobs/jobs.jsonl"), "{}\n").unwrap();
    std::fs::create_dir_all(state.join("git/example/shop")).unwrap();
    std::fs::create_dir_all(r.join("etc/turbo-hipster/conf.d")).unwrap();
    std::fs::write(r.join("etc/turbo-hipster/conf.d/site.json"), "{}\n").unwrap();
    dpkg(&["-i", deb2.to_str().unwrap()], &[]);
    assert_eq!(status(), format!("{v2} ii"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(state.join("datasets/mine/seed.sql").is_file());

    // Remove: the program goes, config and state stay.
    dpkg(&["-r", "turbo-hipster"], &[]);
    assert_eq!(status(), format!("{v2} rc"));
    assert!(!r.join("usr/bin/turbo-hipster").exists());
    assert!(!r.join("usr/lib/turbo-hipster").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(state.join("git/example/shop").is_dir());

    // Purge: config, logs and mirrors go; datasets and job history stay, and it says so.
    let out = dpkg(&["--purge", "turbo-hipster"], &[]);
    let said = text(&out);
    assert_eq!(status(), "");
    assert!(!r.join("etc/turbo-hipster").exists(), "{said}");
    assert!(!r.join("var/log/turbo-hipster").exists(), "{said}");
    assert!(!state.join("git").exists(), "{said}");
    assert!(!state.join("logs").exists(), "empty: removed\n{said}");
    assert!(state.join("datasets/mine/seed.sql").is_file(), "{said}");
    assert!(state.join("jobs/jobs.jsonl").is_file(), "{said}");
    assert!(said.contains("kept what is not empty"), "{said}");
    assert!(said.contains("var/lib/turbo-hipster/datasets"), "{said}");
    assert!(!r.join("etc/init.d/turbo-hipster").exists(), "{said}");

    // Asked for: purge removes the data too.
    dpkg(&["-i", deb.to_str().unwrap()], &[]);
    dpkg(
        &["--purge", "turbo-hipster"],
        &[("TURBO_HIPSTER_PURGE_DATA", "yes")],
    );
    assert!(!state.exists());
    assert_eq!(status(), "");
}

/// Every path under `dir` (not `dir` itself).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}
