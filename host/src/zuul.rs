//! The Zuul v2 contract: job parameters in (validated before anything uses them), the start
//! and result work data out, and the parameters Zuul would make for a manual run.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The largest parameter value accepted.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
/// The most parameters accepted.
pub const MAX_PARAMETERS: usize = 256;

/// Why job parameters were refused; renders as the text after "invalid job parameters: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParameters(pub String);

impl InvalidParameters {
    /// The `result` Zuul gets for it.
    pub fn result(&self) -> String {
        format!("FAILURE - invalid job parameters: {}", self.0)
    }
}

/// The job name of a Gearman function: `build:nova-db:node` → `nova-db`.
pub fn job_name(function: &str) -> &str {
    let name = function.strip_prefix("build:").unwrap_or(function);
    name.split(':').next().unwrap_or(name)
}

/// Parses a job's data: a JSON object of strings (an empty body is an empty object). Only the
/// shape is checked here; whether the values are safe is [`validate`]'s, which every job passes
/// through in [`crate::jobs::prepare`].
///
/// # Errors
/// Anything but a JSON object of strings.
pub fn parse_parameters(data: &[u8]) -> Result<BTreeMap<String, String>, InvalidParameters> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    // What Zuul sends (an object of strings) straight into the map; anything else takes the
    // slower path below, which tolerates numbers and booleans and says what is wrong.
    if let Ok(params) = serde_json::from_slice::<BTreeMap<String, String>>(data) {
        return Ok(params);
    }
    let value: Value =
        serde_json::from_slice(data).map_err(|e| InvalidParameters(format!("not JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(InvalidParameters("not a JSON object".into()));
    };
    let mut params = BTreeMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) => {
                params.insert(k, s);
            }
            // Zuul sends only strings; numbers and booleans are tolerated as their text.
            Value::Number(n) => {
                params.insert(k, n.to_string());
            }
            Value::Bool(b) => {
                params.insert(k, b.to_string());
            }
            Value::Null => {}
            _ => {
                return Err(InvalidParameters(format!(
                    "{k}: expected a string, found a list or object"
                )))
            }
        }
    }
    Ok(params)
}

fn bad(key: &str, why: &str) -> InvalidParameters {
    InvalidParameters(format!("{key}: {why}"))
}

fn is_safe_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && !seg.starts_with('-')
        && seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@'))
}

/// A relative path of safe segments (`openstack/nova`, `45/12345/3/check/job/abcdef0`).
pub fn is_safe_relative_path(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && s.split('/').all(is_safe_segment)
}

fn is_safe_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && !s.starts_with(['-', '/'])
        && !s.ends_with(['/', '.'])
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("@{")
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
}

/// Parameters [`fill_zuul_parameters`] derives from others: checked last, so that a bad
/// source (`ZUUL_UUID`) is named rather than the path made from it.
const DERIVED: &[&str] = &["BASE_LOG_PATH", "LOG_PATH"];

/// Checks every parameter that ends up in a path, a git argument or a process argument.
///
/// # Errors
/// The first unsafe parameter, named (derived ones after those they are made from).
pub fn validate(params: &BTreeMap<String, String>) -> Result<(), InvalidParameters> {
    if params.len() > MAX_PARAMETERS {
        return Err(InvalidParameters(format!(
            "{} parameters, at most {MAX_PARAMETERS} are accepted",
            params.len()
        )));
    }
    let is_derived = |k: &&String| DERIVED.contains(&k.as_str());
    let sources = params.iter().filter(|(k, _)| !is_derived(k));
    let derived = params.iter().filter(|(k, _)| is_derived(k));
    for (k, v) in sources.chain(derived) {
        if k.is_empty()
            || k.len() > 128
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(InvalidParameters(format!(
                "parameter name {k:?} is not made of letters, digits and _"
            )));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(bad(k, &format!("longer than {MAX_VALUE_BYTES} bytes")));
        }
        if v.chars().any(char::is_control) {
            return Err(bad(k, "contains control characters"));
        }
        if v.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "ZUUL_PROJECT" => is_safe_relative_path(v),
            "LOG_PATH" | "BASE_LOG_PATH" => is_safe_relative_path(v),
            "ZUUL_REF" | "ZUUL_BRANCH" | "ZUUL_REFNAME" => is_safe_ref(v),
            "ZUUL_URL" => {
                !v.starts_with('-') && !v.chars().any(char::is_whitespace) && !v.contains("..")
            }
            "ZUUL_UUID" => {
                v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }
            "ZUUL_COMMIT" | "ZUUL_NEWREV" | "ZUUL_OLDREV" => {
                v.len() <= 64 && v.chars().all(|c| c.is_ascii_hexdigit())
            }
            "ZUUL_CHANGE" | "ZUUL_PATCHSET" => {
                v.len() <= 20 && v.chars().all(|c| c.is_ascii_digit())
            }
            "ZUUL_PIPELINE" => is_safe_segment(v),
            _ => true,
        };
        if !ok {
            let why = match k.as_str() {
                "ZUUL_PROJECT" | "LOG_PATH" | "BASE_LOG_PATH" => {
                    "must be a relative path of plain names (no '..', no leading '/' or '-')"
                }
                "ZUUL_REF" | "ZUUL_BRANCH" | "ZUUL_REFNAME" => {
                    "is not a safe git ref name (no leading '-', no '..', no spaces)"
                }
                "ZUUL_URL" => "must not start with '-' or contain spaces or '..'",
                "ZUUL_UUID" => "must be at most 64 letters, digits, '-' or '_'",
                "ZUUL_COMMIT" | "ZUUL_NEWREV" | "ZUUL_OLDREV" => "must be a hexadecimal sha",
                "ZUUL_CHANGE" | "ZUUL_PATCHSET" => "must be a number",
                _ => "is not a plain name",
            };
            return Err(bad(k, why));
        }
    }
    Ok(())
}

/// 32 random hex digits, as Zuul's `ZUUL_UUID`.
pub fn random_uuid_hex() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Entropy should always be there; fall back on time and pid, still unique enough.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `n` characters of `s` (the values are not validated yet: any UTF-8).
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> &str {
    let start = s
        .char_indices()
        .rev()
        .take(n)
        .last()
        .map_or(s.len(), |(i, _)| i);
    &s[start..]
}

/// Fills what Zuul v2 would send and the caller did not give: `ZUUL_UUID`, `ZUUL_PIPELINE`,
/// `ZUUL_VOTING`, `ZUUL_BRANCH`, `BASE_LOG_PATH`, `LOG_PATH`.
pub fn fill_zuul_parameters(function: &str, params: &mut BTreeMap<String, String>) {
    let name = job_name(function).to_string();
    let missing = |p: &BTreeMap<String, String>, k: &str| p.get(k).is_none_or(String::is_empty);
    if missing(params, "ZUUL_UUID") {
        params.insert("ZUUL_UUID".into(), random_uuid_hex());
    }
    if missing(params, "ZUUL_PIPELINE") {
        params.insert("ZUUL_PIPELINE".into(), "check".into());
    }
    if missing(params, "ZUUL_VOTING") {
        params.insert("ZUUL_VOTING".into(), "1".into());
    }
    if missing(params, "ZUUL_BRANCH") && missing(params, "ZUUL_NEWREV") {
        params.insert("ZUUL_BRANCH".into(), "master".into());
    }
    if missing(params, "BASE_LOG_PATH") {
        let base = match (params.get("ZUUL_CHANGE"), params.get("ZUUL_PATCHSET")) {
            (Some(c), Some(p)) if !c.is_empty() && !p.is_empty() => {
                let last2 = last_chars(c, 2);
                format!("{last2}/{c}/{p}")
            }
            _ => match params.get("ZUUL_NEWREV").filter(|r| r.chars().count() >= 2) {
                Some(rev) => format!("{}/{rev}", first_chars(rev, 2)),
                None => "manual".to_string(),
            },
        };
        params.insert("BASE_LOG_PATH".into(), base);
    }
    if missing(params, "LOG_PATH") {
        let uuid = params.get("ZUUL_UUID").cloned().unwrap_or_default();
        let short = first_chars(&uuid, 7);
        let log_path = format!(
            "{}/{}/{}/{}",
            params
                .get("BASE_LOG_PATH")
                .map(String::as_str)
                .unwrap_or("manual"),
            params
                .get("ZUUL_PIPELINE")
                .map(String::as_str)
                .unwrap_or("check"),
            name,
            short
        );
        params.insert("LOG_PATH".into(), log_path);
    }
}

/// Facts about this worker for the start work data.
#[derive(Debug, Clone)]
pub struct WorkerFacts {
    /// The worker's name.
    pub worker_name: String,
    /// Short host name.
    pub hostname: String,
    /// Fully qualified name (best effort).
    pub fqdn: String,
}

/// The first WORK_DATA of a build: Zuul marks it started. Never carries `result`.
pub fn start_work_data(
    function: &str,
    unique: &str,
    manager: &str,
    url: &str,
    facts: &WorkerFacts,
) -> Value {
    json!({
        "name": job_name(function),
        "number": unique,
        "manager": manager,
        "url": url,
        "worker_name": facts.worker_name,
        "worker_hostname": facts.hostname,
        "worker_fqdn": facts.fqdn,
        "worker_program": "turbo-hipster",
        "worker_version": env!("CARGO_PKG_VERSION"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        assert_eq!(
            job_name("build:gate-real-db-upgrade"),
            "gate-real-db-upgrade"
        );
        assert_eq!(job_name("build:x:node"), "x");
        assert_eq!(job_name("x"), "x");
    }

    /// What a job's data goes through before anything runs: parsing, then validation.
    fn checked(data: &[u8]) -> Result<BTreeMap<String, String>, InvalidParameters> {
        let p = parse_parameters(data)?;
        validate(&p)?;
        Ok(p)
    }

    #[test]
    fn rejects_what_would_escape_or_inject() {
        for (k, v) in [
            ("ZUUL_PROJECT", "../etc"),
            ("ZUUL_PROJECT", "/abs"),
            ("ZUUL_PROJECT", "-rf"),
            ("ZUUL_PROJECT", "a/../../b"),
            ("LOG_PATH", "../../x"),
            ("ZUUL_REF", "--upload-pack=evil"),
            ("ZUUL_REF", "refs/a b"),
            ("ZUUL_URL", "-oProxyCommand=x"),
            ("ZUUL_UUID", "a/b"),
            ("ZUUL_COMMIT", "xyz"),
            ("ANYTHING", "line\nbreak"),
        ] {
            let data = json!({ k: v }).to_string();
            let e = checked(data.as_bytes()).unwrap_err();
            assert!(
                e.result().starts_with("FAILURE - invalid job parameters: "),
                "{e:?}"
            );
            assert!(e.0.contains(k) || e.0.contains("control"), "{k}={v}: {e}");
        }
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(checked(json!({ "A": big }).to_string().as_bytes()).is_err());
        assert!(parse_parameters(b"[1,2]").is_err());
        assert!(parse_parameters(b"{\"A\": [1]}").is_err());
        assert!(parse_parameters(b"not json").is_err());
    }

    #[test]
    fn a_bad_uuid_is_named_not_the_log_path_made_from_it() {
        for uuid in ["../../x", "a/b/c", "ééééééé", "x y"] {
            let mut p = BTreeMap::from([("ZUUL_UUID".to_string(), uuid.to_string())]);
            fill_zuul_parameters("build:job", &mut p);
            let e = validate(&p).unwrap_err();
            assert!(e.0.starts_with("ZUUL_UUID: "), "{uuid}: {e}");
        }
        // Multi-byte change numbers and revisions do not panic the filling either.
        let mut p = BTreeMap::from([
            ("ZUUL_CHANGE".to_string(), "1é".to_string()),
            ("ZUUL_PATCHSET".to_string(), "1".to_string()),
        ]);
        fill_zuul_parameters("build:job", &mut p);
        assert!(validate(&p).unwrap_err().0.starts_with("ZUUL_CHANGE: "));
        let mut p = BTreeMap::from([("ZUUL_NEWREV".to_string(), "éé".to_string())]);
        fill_zuul_parameters("build:job", &mut p);
        assert!(validate(&p).unwrap_err().0.starts_with("ZUUL_NEWREV: "));
    }

    #[test]
    fn accepts_real_zuul_parameters() {
        let data = json!({
            "ZUUL_UUID": "bc1198bacf884c0295037e8e32c0ec17",
            "ZUUL_PROJECT": "openstack/nova",
            "ZUUL_PIPELINE": "check",
            "ZUUL_URL": "http://zuul.rcbops.com/p",
            "ZUUL_REF": "refs/zuul/master/Zfa8228d022314ccd967a79ca3f853198",
            "ZUUL_COMMIT": "b1856cf0000000000000000000000000000000aa",
            "ZUUL_BRANCH": "master",
            "ZUUL_CHANGE": "65615",
            "ZUUL_PATCHSET": "7",
            "ZUUL_CHANGES": "openstack/nova:master:refs/changes/15/65615/7",
            "LOG_PATH": "15/65615/7/check/gate-real-db-upgrade_nova_percona_user_001/bc1198b",
            "ZUUL_VOTING": "1",
        })
        .to_string();
        let p = checked(data.as_bytes()).unwrap();
        assert_eq!(p["ZUUL_PROJECT"], "openstack/nova");
    }

    #[test]
    fn strings_take_the_fast_path_and_other_scalars_are_tolerated() {
        let p = parse_parameters(br#"{"A": "x", "A2": "\u00e9\n"}"#).unwrap();
        assert_eq!((p["A"].as_str(), p["A2"].as_str()), ("x", "\u{e9}\n"));
        let p = parse_parameters(br#"{"A": "x", "N": 5, "B": true, "Z": null}"#).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!((p["N"].as_str(), p["B"].as_str()), ("5", "true"));
        assert!(parse_parameters(b"  \n").unwrap().is_empty());
    }

    #[test]
    fn fills_like_zuul() {
        let mut p = BTreeMap::new();
        p.insert("ZUUL_CHANGE".to_string(), "65615".to_string());
        p.insert("ZUUL_PATCHSET".to_string(), "7".to_string());
        fill_zuul_parameters("build:gate-real-db-upgrade", &mut p);
        let uuid = p["ZUUL_UUID"].clone();
        assert_eq!(uuid.len(), 32);
        assert_eq!(p["BASE_LOG_PATH"], "15/65615/7");
        assert_eq!(
            p["LOG_PATH"],
            format!("15/65615/7/check/gate-real-db-upgrade/{}", &uuid[..7])
        );
        validate(&p).unwrap();
        assert_ne!(random_uuid_hex(), random_uuid_hex());
    }

    #[test]
    fn start_data_has_no_result() {
        let facts = WorkerFacts {
            worker_name: "w".into(),
            hostname: "h".into(),
            fqdn: "h.example".into(),
        };
        let v = start_work_data(
            "build:x",
            "u1",
            "turbo-hipster-manager-h",
            "http://l/",
            &facts,
        );
        assert!(v.get("result").is_none());
        assert_eq!(v["name"], "x");
        assert_eq!(v["number"], "u1");
        assert_eq!(v["worker_program"], "turbo-hipster");
    }
}
