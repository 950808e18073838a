//! Which build parameters may become environment variables of a job's processes.
//!
//! Whoever reaches the Gearman server can submit a build with any parameters (Gearman has no
//! authentication), and a plugin that exported every parameter would let a build set
//! `BASH_ENV=/path/evil.sh` or `LD_PRELOAD=…` and take over the script it starts. So a
//! parameter reaches a process only when it is
//!
//! 1. one Zuul v2 defines ([`is_zuul_parameter`]): any `ZUUL_*` name (`ZUUL_UUID`,
//!    `ZUUL_PROJECT`, `ZUUL_PIPELINE`, `ZUUL_URL`, `ZUUL_REF`, `ZUUL_COMMIT`, `ZUUL_VOTING`,
//!    `ZUUL_BRANCH`, `ZUUL_CHANGE`, `ZUUL_PATCHSET`, `ZUUL_CHANGE_IDS`, `ZUUL_CHANGES`,
//!    `ZUUL_REFNAME`, `ZUUL_OLDREV`, `ZUUL_NEWREV`, and the `ZUUL_*` names later Zuul v2
//!    releases added), `LOG_PATH` and `BASE_LOG_PATH`; or
//! 2. named by the job's configuration ([`PASS_PARAMETERS_KEY`]: `NAME` or `PREFIX*`);
//!
//! and in both cases **not** on the deny-list ([`denied`]), which no configuration can lift. A
//! configuration that names a denied variable is a configuration error, so `check-config`
//! says so before any build runs. Names that are not valid shell identifiers are never passed.
//!
//! The deny-list holds what changes how a program starts or where it reaches, rather than
//! data a script reads on purpose (see [`DENIED_NAMES`], [`DENIED_PREFIXES`] and
//! [`DENIED_SUFFIXES`] for each entry and why).
//!
//! The other way round, the daemon's own secrets never reach the code a build runs: a process
//! that runs the change's code (or a job's child process) inherits the daemon's environment
//! without the variables of [`DAEMON_SECRETS`] ([`remove_daemon_secrets`]). What the job's
//! configuration sets on purpose (a dataset's `env`) is applied after, and stays.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Map, Value};

use crate::config::{index, present, Checker};

/// The job configuration key that lists extra parameters to pass: `["MY_VAR", "BUILD_*"]`.
pub const PASS_PARAMETERS_KEY: &str = "pass_parameters";

/// Parameters Zuul v2 sends besides the `ZUUL_*` ones.
pub const ZUUL_EXTRA_PARAMETERS: [&str; 2] = ["LOG_PATH", "BASE_LOG_PATH"];

/// Exact names that are never passed from a build, and why.
pub const DENIED_NAMES: [(&str, &str); 27] = [
    ("ENV", "sh and bash in POSIX mode source the file it names"),
    (
        "SHELLOPTS",
        "turns on shell options (xtrace with PS4 runs code)",
    ),
    ("BASHOPTS", "turns on bash options"),
    ("PS1", "prompt strings run command substitutions"),
    ("PS2", "prompt strings run command substitutions"),
    ("PS3", "prompt strings run command substitutions"),
    ("PS4", "evaluated for every traced command"),
    ("PROMPT_COMMAND", "run by interactive shells"),
    ("IFS", "changes how every shell splits words"),
    ("CDPATH", "changes where `cd` goes"),
    ("PATH", "chooses which programs run"),
    (
        "HOME",
        "chooses the dotfiles (.gitconfig can run commands, .pydistutils.cfg, …)",
    ),
    ("SHELL", "chooses the shell other programs start"),
    ("TMPDIR", "moves temporary files where a build chooses"),
    ("GCONV_PATH", "makes glibc load a shared object"),
    ("LOCPATH", "makes glibc load locale files from anywhere"),
    (
        "NLSPATH",
        "makes programs read message catalogs from anywhere",
    ),
    ("GLIBC_TUNABLES", "glibc start-up settings (CVE-2023-4911)"),
    ("HOSTALIASES", "redirects host names"),
    ("RESOLV_HOST_CONF", "redirects host names"),
    ("LOCALDOMAIN", "changes name resolution"),
    ("RES_OPTIONS", "changes name resolution"),
    ("TZDIR", "makes programs read time zone files from anywhere"),
    ("NODE_OPTIONS", "preloads code into node"),
    (
        "OPENSSL_CONF",
        "an OpenSSL configuration can load engines (code)",
    ),
    ("REQUESTS_CA_BUNDLE", "trusts another certificate authority"),
    ("CLASSPATH", "chooses the Java classes that run"),
];

/// Name prefixes that are never passed from a build, and why.
pub const DENIED_PREFIXES: [(&str, &str); 28] = [
    (
        "BASH_",
        "BASH_ENV is sourced by bash; BASH_FUNC_* defines functions",
    ),
    (
        "LD_",
        "the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT load code",
    ),
    ("DYLD_", "the macOS dynamic loader"),
    ("MALLOC_", "glibc malloc settings"),
    (
        "PYTHON",
        "PYTHONSTARTUP, PYTHONPATH, PYTHONHOME, PYTHONWARNINGS import code",
    ),
    ("PERL5", "PERL5OPT, PERL5LIB load code"),
    ("PERLLIB", "loads Perl code"),
    ("PERL_", "Perl start-up settings"),
    ("RUBY", "RUBYOPT, RUBYLIB load code"),
    ("GEM_", "chooses the Ruby gems that load"),
    ("NODE_", "NODE_PATH chooses the modules node loads"),
    (
        "GIT_",
        "GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_* run commands",
    ),
    (
        "SSH_",
        "SSH_AUTH_SOCK, SSH_ASKPASS hand over keys or run a program",
    ),
    (
        "SSL_",
        "SSL_CERT_FILE, SSL_CERT_DIR trust another certificate authority",
    ),
    (
        "CURL_",
        "CURL_CA_BUNDLE trusts another certificate authority",
    ),
    ("OPENSSL_", "OpenSSL start-up settings"),
    (
        "PIP_",
        "PIP_INDEX_URL, PIP_CONFIG_FILE choose what gets installed",
    ),
    (
        "XDG_",
        "XDG_CONFIG_HOME chooses configuration files (git's can run commands)",
    ),
    (
        "TERMINFO",
        "makes curses programs parse files from anywhere",
    ),
    ("KRB5", "Kerberos configuration"),
    (
        "PG",
        "libpq: PGHOST, PGPASSFILE, PGSERVICEFILE redirect database connections",
    ),
    (
        "MYSQL_",
        "MYSQL_HOST, MYSQL_UNIX_PORT redirect database connections",
    ),
    ("JAVA_", "JAVA_TOOL_OPTIONS loads agents"),
    ("_JAVA_", "_JAVA_OPTIONS loads agents"),
    ("JDK_JAVA_", "JDK_JAVA_OPTIONS loads agents"),
    ("LESS", "LESSOPEN runs a command"),
    (
        "TH_",
        "reserved for the variables the plugins set themselves",
    ),
    ("ZDOTDIR", "chooses zsh's start-up files"),
];

/// Name suffixes (compared case-insensitively) that are never passed from a build, and why.
pub const DENIED_SUFFIXES: [(&str, &str); 2] = [
    (
        "_PROXY",
        "http_proxy, HTTPS_PROXY, ALL_PROXY, NO_PROXY redirect network traffic",
    ),
    ("PAGER", "PAGER, GIT_PAGER, MANPAGER run a command"),
];

/// The daemon's own secrets: variables of its environment that no process running a build's
/// code inherits, and why.
pub const DAEMON_SECRETS: [(&str, &str); 8] = [
    (
        "AWS_ACCESS_KEY_ID",
        "publish_logs (s3) reads the object store's key id from it when the config has none",
    ),
    (
        "AWS_SECRET_ACCESS_KEY",
        "publish_logs (s3) reads the object store's secret key from it when the config has none",
    ),
    (
        "AWS_SESSION_TOKEN",
        "the token of temporary AWS keys, which AWS clients send with them",
    ),
    (
        "AWS_SECURITY_TOKEN",
        "the older name of AWS_SESSION_TOKEN, still read by some AWS clients",
    ),
    (
        "PGPASSWORD",
        "libpq's password: an administrator's, for the seed and production databases",
    ),
    (
        "PGPASSFILE",
        "libpq's password file: where an administrator's database passwords are",
    ),
    (
        "PGSERVICEFILE",
        "libpq's service file, whose entries may hold passwords",
    ),
    (
        "MYSQL_PWD",
        "the mysql client's password: an administrator's, for the seed databases",
    ),
];

/// Makes `command` not inherit the daemon's secrets ([`DAEMON_SECRETS`]); the rest of the
/// daemon's environment stays. Call it before setting what the job's configuration sets on
/// purpose: a variable set afterwards reaches the process, even one of these.
///
/// ```
/// use std::ffi::OsStr;
/// use std::process::Command;
/// use turbo_hipster_sdk::support::env::remove_daemon_secrets;
///
/// let mut cmd = Command::new("env");
/// remove_daemon_secrets(&mut cmd).env("PGPASSWORD", "the dataset's");
/// let envs: Vec<_> = cmd.get_envs().collect();
/// assert!(envs.contains(&(OsStr::new("AWS_SECRET_ACCESS_KEY"), None)));
/// assert!(envs.contains(&(OsStr::new("PGPASSWORD"), Some(OsStr::new("the dataset's")))));
/// ```
pub fn remove_daemon_secrets(command: &mut Command) -> &mut Command {
    for (name, _) in DAEMON_SECRETS {
        command.env_remove(name);
    }
    command
}

/// Exact names (compared case-insensitively) that run a command, not on the lists above.
const DENIED_COMMANDS: [&str; 3] = ["EDITOR", "VISUAL", "BROWSER"];

/// Why `name` is never passed from a build, or `None`. Names are compared as given, except
/// proxies and pagers, whose lower-case forms programs read too.
///
/// ```
/// use turbo_hipster_sdk::support::env::denied;
///
/// assert!(denied("BASH_ENV").is_some());
/// assert!(denied("LD_PRELOAD").is_some());
/// assert!(denied("https_proxy").is_some());
/// assert!(denied("ZUUL_PROJECT").is_none());
/// ```
pub fn denied(name: &str) -> Option<&'static str> {
    if let Some((_, why)) = DENIED_NAMES.iter().find(|(n, _)| *n == name) {
        return Some(why);
    }
    if let Some((_, why)) = DENIED_PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(why);
    }
    let upper = name.to_ascii_uppercase();
    if let Some((_, why)) = DENIED_SUFFIXES.iter().find(|(s, _)| upper.ends_with(s)) {
        return Some(why);
    }
    DENIED_COMMANDS
        .contains(&upper.as_str())
        .then_some("names a command programs run")
}

/// Whether Zuul v2 defines `name` as a build parameter.
pub fn is_zuul_parameter(name: &str) -> bool {
    name.starts_with("ZUUL_") || ZUUL_EXTRA_PARAMETERS.contains(&name)
}

/// Whether `name` can be an environment variable a shell can read: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One `pass_parameters` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// The parameters of a build that may reach a process's environment.
///
/// ```
/// use std::collections::BTreeMap;
/// use serde_json::json;
/// use turbo_hipster_sdk::support::env::ParameterFilter;
///
/// let config = json!({"pass_parameters": ["MY_VAR"]});
/// let filter = ParameterFilter::from_config(config.as_object().unwrap()).unwrap();
/// let params: BTreeMap<String, String> = [("ZUUL_PROJECT", "p"), ("MY_VAR", "1"), ("BASH_ENV", "/x")]
///     .into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
/// let split = filter.split(&params);
/// assert_eq!(split.passed, [("MY_VAR", "1"), ("ZUUL_PROJECT", "p")]);
/// assert_eq!(split.dropped, ["BASH_ENV"]);
///
/// let bad = json!({"pass_parameters": ["LD_PRELOAD"]});
/// let err = ParameterFilter::from_config(bad.as_object().unwrap()).unwrap_err();
/// assert!(err[0].starts_with("pass_parameters[0]: LD_PRELOAD is never passed"), "{err:?}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterFilter {
    extra: Vec<Pattern>,
}

/// What [`ParameterFilter::split`] made of a build's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split<'a> {
    /// Name and value of each parameter to pass, in name order.
    pub passed: Vec<(&'a str, &'a str)>,
    /// The names of the others, in name order.
    pub dropped: Vec<&'a str>,
}

impl ParameterFilter {
    /// Only the parameters Zuul defines.
    pub fn zuul_only() -> Self {
        Self::default()
    }

    /// Reads [`PASS_PARAMETERS_KEY`] from a job's configuration (absent: Zuul's only).
    ///
    /// # Errors
    /// One line per problem, each starting with its key path (`pass_parameters[2]: …`): not a
    /// list of strings, not a valid name or `PREFIX*`, or a denied name or prefix.
    pub fn from_config(config: &Map<String, Value>) -> Result<Self, Vec<String>> {
        let mut c = Checker::bare();
        let filter = Self::check(&mut c, config);
        c.finish(filter).map(|(filter, _)| filter)
    }

    /// [`from_config`](Self::from_config), recording every problem in `c`.
    pub fn check(c: &mut Checker, config: &Map<String, Value>) -> Self {
        let key = PASS_PARAMETERS_KEY;
        let Some(items) = present(config, key).and_then(|v| c.list(key, v)) else {
            return Self::default();
        };
        let mut extra = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = index(key, i);
            match c.string(&at, item).map(parse_pattern) {
                Some(Ok(p)) => extra.push(p),
                Some(Err(why)) => c.error(&at, why),
                None => {}
            }
        }
        Self { extra }
    }

    /// Whether a parameter named `name` may be passed.
    pub fn allows(&self, name: &str) -> bool {
        is_valid_name(name)
            && denied(name).is_none()
            && (is_zuul_parameter(name) || self.extra.iter().any(|p| p.matches(name)))
    }

    /// Splits `parameters` into those to pass (values with a NUL byte are dropped too: no
    /// environment can hold them) and the names of the others.
    pub fn split<'a>(&self, parameters: &'a BTreeMap<String, String>) -> Split<'a> {
        let mut split = Split::default();
        for (name, value) in parameters {
            if self.allows(name) && !value.contains('\0') {
                split.passed.push((name, value));
            } else {
                split.dropped.push(name);
            }
        }
        split
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let (name, prefix) = match text.strip_suffix('*') {
        Some(p) => (p, true),
        None => (text, false),
    };
    if !is_valid_name(name) {
        return Err(format!(
            "{text:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*, optionally ending in *)"
        ));
    }
    if let Some(why) = denied(name) {
        return Err(format!(
            "{text} is never passed from a build, whatever the configuration: {why}"
        ));
    }
    if prefix {
        // A prefix is refused when the names it covers all fall into a denied family.
        if let Some((p, why)) = DENIED_PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
            return Err(format!("{text} is never passed from a build ({p}*): {why}"));
        }
        Ok(Pattern::Prefix(name.to_string()))
    } else {
        Ok(Pattern::Exact(name.to_string()))
    }
}

/// One line naming the parameters a plugin did not pass, for the job's log (at most 20
/// names, each quoted: they come from the network).
pub fn describe_dropped(dropped: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut names: Vec<String> = dropped
        .iter()
        .take(SHOWN)
        .map(|n| format!("{:?}", truncate(n, 64)))
        .collect();
    if dropped.len() > SHOWN {
        names.push(format!("and {} more", dropped.len() - SHOWN));
    }
    format!(
        "build parameters not passed to the environment (not defined by Zuul nor allowed by \
         {PASS_PARAMETERS_KEY}, or never allowed): {}",
        names.join(", ")
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> Result<ParameterFilter, Vec<String>> {
        ParameterFilter::from_config(v.as_object().unwrap())
    }

    #[test]
    fn zuul_parameters_pass_and_program_settings_never_do() {
        let f = ParameterFilter::zuul_only();
        for name in [
            "ZUUL_UUID",
            "ZUUL_PROJECT",
            "ZUUL_CHANGE_IDS",
            "ZUUL_NEWREV",
            "LOG_PATH",
            "BASE_LOG_PATH",
        ] {
            assert!(f.allows(name), "{name}");
        }
        for name in [
            "BASH_ENV",
            "ENV",
            "LD_PRELOAD",
            "PATH",
            "IFS",
            "PYTHONPATH",
            "GIT_SSH_COMMAND",
            "PERL5OPT",
            "MY_VAR",
            "BUILD_NUMBER",
            "zuul_project",
            "ZUUL-X",
            "",
        ] {
            assert!(!f.allows(name), "{name}");
        }
    }

    #[test]
    fn the_config_extends_the_list_but_never_past_the_deny_list() {
        let f = filter(json!({"pass_parameters": ["MY_VAR", "BUILD_*"]})).unwrap();
        assert!(f.allows("MY_VAR"));
        assert!(f.allows("BUILD_NUMBER"));
        assert!(f.allows("BUILD_"));
        assert!(!f.allows("MY_VAR2"));
        // A prefix that covers a denied name does not pass it.
        let f = filter(json!({"pass_parameters": ["P*", "H*"]})).unwrap();
        assert!(f.allows("PROJECT_X"));
        assert!(!f.allows("PATH"));
        assert!(!f.allows("PYTHONPATH"));
        assert!(!f.allows("HOME"));
        assert!(!f.allows("http_proxy"));
    }

    #[test]
    fn denied_or_malformed_entries_are_config_errors_naming_the_key() {
        let errors = filter(json!({"pass_parameters": [
            "OK", "BASH_ENV", "LD_*", "PYTHONX*", "a-b", 3, "*", "https_proxy", "TH_RESULT_FILE"
        ]}))
        .unwrap_err();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "pass_parameters[1]",
                "pass_parameters[2]",
                "pass_parameters[3]",
                "pass_parameters[4]",
                "pass_parameters[5]",
                "pass_parameters[6]",
                "pass_parameters[7]",
                "pass_parameters[8]",
            ],
            "{errors:?}"
        );
        assert!(errors[0].contains("never passed"), "{errors:?}");
        let err = filter(json!({"pass_parameters": "MY_VAR"})).unwrap_err();
        assert!(
            err[0].starts_with("pass_parameters: expected a list"),
            "{err:?}"
        );
        assert_eq!(filter(json!({})).unwrap(), ParameterFilter::zuul_only());
    }

    /// The variables a child prints (`NAME=value` lines of `env`).
    fn printed_env(cmd: &mut Command) -> Vec<String> {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_daemon_s_secrets_do_not_reach_a_child_but_what_is_set_after_does() {
        // Set on the command first, as a daemon started with them would pass them on (the
        // plugins' tests start a real daemon with them in its environment).
        let before = [
            ("AWS_ACCESS_KEY_ID", "AKIDLEAK"),
            ("AWS_SECRET_ACCESS_KEY", "SECRETLEAK"),
            ("AWS_SESSION_TOKEN", "TOKENLEAK"),
            ("PGPASSWORD", "PGLEAK"),
            ("PGPASSFILE", "/root/.pgpass-leak"),
            ("MYSQL_PWD", "MYLEAK"),
            ("TH_UNRELATED", "kept"),
        ];
        let mut cmd = Command::new("env");
        cmd.envs(before);
        remove_daemon_secrets(&mut cmd).env("MYSQL_PWD", "set-after");
        let printed = printed_env(&mut cmd);
        assert!(
            printed.contains(&"TH_UNRELATED=kept".to_string()),
            "{printed:?}"
        );
        assert!(
            printed.contains(&"MYSQL_PWD=set-after".to_string()),
            "{printed:?}"
        );
        for (name, why) in DAEMON_SECRETS {
            assert!(!why.is_empty(), "{name}");
            if name != "MYSQL_PWD" {
                let leaked = printed.iter().find(|l| l.starts_with(&format!("{name}=")));
                assert!(leaked.is_none(), "{name} reached the child: {leaked:?}");
            }
        }
        // Where the databases are is no secret: the worker's own settings may name it.
        assert!(!DAEMON_SECRETS.iter().any(|(n, _)| *n == "PGHOST"));
    }

    #[test]
    fn split_keeps_order_and_drops_nul_values() {
        let f = ParameterFilter::zuul_only();
        let params: BTreeMap<String, String> = [
            ("ZUUL_REF", "r"),
            ("ZUUL_CHANGE", "a\0b"),
            ("BASH_ENV", "/evil"),
            ("LOG_PATH", "x/y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let split = f.split(&params);
        assert_eq!(split.passed, [("LOG_PATH", "x/y"), ("ZUUL_REF", "r")]);
        assert_eq!(split.dropped, ["BASH_ENV", "ZUUL_CHANGE"]);
        let line = describe_dropped(&split.dropped);
        assert!(line.ends_with("\"BASH_ENV\", \"ZUUL_CHANGE\""), "{line}");
        let many: Vec<String> = (0..25).map(|i| format!("X{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(describe_dropped(&many).ends_with("and 5 more"));
    }
}
