//! scripts/install.sh lays out the real installation; a plugin dropped into it and named in
//! the config is all it takes to add one.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;
use turbo_hipster_tests::{built, fixture, root, text, Fixture};

#[test]
fn install_script_lays_out_the_real_layout_and_a_dropped_in_plugin_loads() {
    built();
    let dest = tempfile::tempdir().unwrap();
    let run_install = || {
        Command::new("bash")
            .arg(root().join("scripts/install.sh"))
            .args(["--no-build", "--profile", "debug", "--destdir"])
            .arg(dest.path())
            .output()
            .unwrap()
    };
    let out = run_install();
    assert!(out.status.success(), "{}", text(&out));
    let d = dest.path();
    for f in [
        "usr/bin/turbo-hipster",
        "usr/lib/turbo-hipster/plugins/shell_script/libtask.so",
        "usr/lib/turbo-hipster/plugins/gate_real_db_upgrade/libtask.so",
        "etc/turbo-hipster/config.json",
        "etc/init.d/turbo-hipster",
        "lib/systemd/system/turbo-hipster.service",
    ] {
        assert!(d.join(f).is_file(), "{f} missing:\n{}", text(&out));
    }
    for dir in [
        "var/lib/turbo-hipster/jobs",
        "var/lib/turbo-hipster/git",
        "var/lib/turbo-hipster/datasets",
    ] {
        assert!(d.join(dir).is_dir(), "{dir} missing");
    }
    // An edited config survives a reinstall.
    let config = d.join("etc/turbo-hipster/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let plugins_dir = d.join("usr/lib/turbo-hipster/plugins");
    cfg["plugin_dirs"] = serde_json::json!([plugins_dir]);
    cfg["jobs_working_dir"] = serde_json::json!(d.join("var/lib/turbo-hipster/jobs"));
    cfg["conf_d"] = serde_json::json!(d.join("etc/turbo-hipster/conf.d"));
    cfg["debug_log"] = serde_json::json!(d.join("var/log/turbo-hipster/debug.log"));
    cfg["publish_logs"]["path"] = serde_json::json!(d.join("var/lib/turbo-hipster/logs"));
    // The plugin author's whole story: drop the library in, name it, (re)start.
    std::fs::create_dir_all(plugins_dir.join("test_plugin")).unwrap();
    std::fs::copy(
        fixture(Fixture::TestPlugin),
        plugins_dir.join("test_plugin/libtask.so"),
    )
    .unwrap();
    cfg["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("test_plugin"));
    std::fs::write(&config, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let out = run_install();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kept"), "{}", text(&out));
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(kept, cfg);

    let out = Command::new(d.join("usr/bin/turbo-hipster"))
        .arg("-c")
        .arg(&config)
        .arg("plugins")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(t.contains("test_plugin\n"), "{t}");
    assert!(t.contains("jobs:        build:test-plugin"), "{t}");
    assert!(t.contains("jobs:        build:gate-real-db-upgrade"), "{t}");
    assert!(t.contains("jobs:        build:do-something"), "{t}");
    assert!(out.status.success(), "{t}");
}
