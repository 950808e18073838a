//! Publishing a job's results to an S3-compatible object store (`publish_logs.type` `"s3"`),
//! through the `object_store` crate (Apache Arrow's; path-style requests, a custom endpoint,
//! plain HTTP when the endpoint says `http://`, static credentials).
//!
//! The results become objects `<prefix>/<LOG_PATH>/<file>` with a content type browsers
//! display (`.html`, `.txt`, `.log`, `.json`, …). A file above [`MULTIPART_THRESHOLD`] goes up
//! as a multipart upload read from the file one part at a time, never whole; a failed one is
//! aborted. Each request that fails is tried again up to `retries` times with a growing pause
//! (0.5 s, 1 s, 2 s, … at most 10 s), unless trying again cannot help (keys refused, no such
//! bucket, a bad request): that fails at once, saying what to fix. Nothing is left
//! half-published without saying so: the marker [`INCOMPLETE_MARKER`] is uploaded first and
//! removed last; when an upload fails for good the objects already uploaded are removed, then
//! the marker, and whatever could not be removed is named in the error (the marker stays
//! with it). The credentials never appear in an error, a log line or an uploaded file: they
//! are cut out of every message here, and out of every file by the caller before it uploads
//! them (`jobs::write_results` masks the results with the storage keys among the secrets).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::HttpError;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};
use turbo_hipster_sdk::support::text::one_line;

use crate::config::S3Publish;
use crate::job_dir::{JOB_SUMMARY, WORK_DIR};

/// The object uploaded before a job's results and removed after them: where it is, the logs
/// beside it are incomplete.
pub const INCOMPLETE_MARKER: &str = "PUBLISHING-INCOMPLETE.txt";
const MARKER_TEXT: &str =
    "The upload of this job's results did not finish: the files here are incomplete.\n";
/// The first pause before a retry; each next one doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const REDACTED: &str = "***";
/// Files above this size (16 MiB) are uploaded in parts (an S3 multipart upload), each read
/// from the file when it is sent: an upload holds at most one part in memory.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of every part but the last (S3 wants at least 5 MiB), made larger for a file that
/// would need more than [`MAX_PARTS`].
const PART_SIZE: u64 = 8 * 1024 * 1024;
/// The most parts S3 takes in one upload.
const MAX_PARTS: u64 = 10_000;

/// Content types by file extension (anything else is `application/octet-stream`).
const CONTENT_TYPES: [(&str, &str); 11] = [
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("log", "text/plain; charset=utf-8"),
    ("sql", "text/plain; charset=utf-8"),
    ("json", "application/json"),
    ("jsonl", "text/plain; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
];

/// Where a job's results go in the store, for messages: `s3://bucket/prefix/LOG_PATH/`.
pub fn location(target: &S3Publish, log_path: &str) -> String {
    format!("s3://{}/{}/", target.bucket, job_prefix(target, log_path))
}

fn job_prefix(target: &S3Publish, log_path: &str) -> String {
    let log_path = log_path.trim_matches('/');
    if target.prefix.is_empty() {
        log_path.to_string()
    } else {
        format!("{}/{log_path}", target.prefix)
    }
}

/// Uploads the job's results (without its work dir) under `<prefix>/<log_path>/`.
///
/// # Errors
/// What failed, after the retries, and what of a partial upload could not be removed; no
/// credential appears in it.
pub fn upload(target: &S3Publish, results_dir: &Path, log_path: &str) -> Result<(), String> {
    let secrets = [
        target.access_key_id.expose().to_string(),
        target.secret_access_key.expose().to_string(),
    ];
    on_own_runtime(upload_all(target, results_dir, log_path, &secrets)).map_err(|e| {
        format!(
            "cannot publish the job's logs to {}: {}",
            location(target, log_path),
            redact_text(&e, &secrets)
        )
    })
}

/// The object `check-config` writes and removes to try the store.
pub const CHECK_OBJECT: &str = ".turbo-hipster-check";

/// Writes and removes one small object under the prefix (no retries): the endpoint answers,
/// the bucket exists, the keys may write and delete there.
///
/// # Errors
/// What failed, without credentials.
pub fn check_access(target: &S3Publish) -> Result<(), String> {
    let secrets = [
        target.access_key_id.expose().to_string(),
        target.secret_access_key.expose().to_string(),
    ];
    let check = async {
        let store = store(target)?;
        let key = if target.prefix.is_empty() {
            CHECK_OBJECT.to_string()
        } else {
            format!("{}/{CHECK_OBJECT}", target.prefix)
        };
        let object = ObjectPath::parse(key).map_err(|e| e.to_string())?;
        let payload = PutPayload::from_static(b"written by turbo-hipster check-config\n");
        with_retries(0, &secrets, "upload", &object, || {
            store.put(&object, payload.clone())
        })
        .await?;
        with_retries(0, &secrets, "remove", &object, || store.delete(&object)).await
    };
    on_own_runtime(check).map_err(|e| {
        let prefix = if target.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", target.prefix)
        };
        format!(
            "cannot write to s3://{}/{prefix}: {}",
            target.bucket,
            redact_text(&e, &secrets)
        )
    })
}

/// Runs `work` on a runtime of its own, on a thread of its own: the caller may be on a
/// runtime's thread already (the daemon's, a test's).
fn on_own_runtime<F>(work: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the upload: {e}"))?;
            runtime.block_on(work)
        })
        .join()
        .unwrap_or_else(|_| Err("the upload failed: its thread panicked".into()))
    })
}

fn store(target: &S3Publish) -> Result<AmazonS3, String> {
    let mut options = ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_default_content_type("application/octet-stream");
    for (ext, mime) in CONTENT_TYPES {
        options = options.with_content_type_for_suffix(ext, mime);
    }
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&target.bucket)
        .with_region(&target.region)
        .with_access_key_id(target.access_key_id.expose())
        .with_secret_access_key(target.secret_access_key.expose())
        .with_virtual_hosted_style_request(false)
        // Retries are ours (each logged, the same count for every kind of failure).
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: REQUEST_TIMEOUT,
        })
        .with_client_options(options);
    if let Some(endpoint) = &target.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    builder
        .build()
        .map_err(|e| format!("bad object store settings: {e}"))
}

/// The upload: marker, files, marker removed; on a failure, what was uploaded is removed.
async fn upload_all(
    target: &S3Publish,
    results_dir: &Path,
    log_path: &str,
    secrets: &[String],
) -> Result<(), String> {
    let files = result_files(results_dir)
        .map_err(|e| format!("cannot list {}: {e}", results_dir.display()))?;
    let store = store(target)?;
    let prefix = job_prefix(target, log_path);
    let key = |rel: &str| ObjectPath::parse(format!("{prefix}/{rel}")).map_err(|e| e.to_string());
    let marker = key(INCOMPLETE_MARKER)?;
    let retries = target.retries;
    with_retries(retries, secrets, "upload", &marker, || {
        store.put(&marker, PutPayload::from_static(MARKER_TEXT.as_bytes()))
    })
    .await?;
    let mut uploaded = Vec::with_capacity(files.len());
    let mut failure = None;
    for (file, rel) in &files {
        let object = match key(rel) {
            Ok(o) => o,
            Err(_) => {
                failure = Some(format!(
                    "{}: not a valid object name (control characters, \".\" or \"..\")",
                    one_line(&file.display().to_string())
                ));
                break;
            }
        };
        let size = match std::fs::metadata(file) {
            Ok(m) => m.len(),
            Err(e) => {
                failure = Some(format!("cannot read {}: {e}", file.display()));
                break;
            }
        };
        let put = if size > MULTIPART_THRESHOLD {
            upload_in_parts(&store, file, size, &object, retries, secrets).await
        } else {
            let data = match std::fs::read(file) {
                Ok(d) => d,
                Err(e) => {
                    failure = Some(format!("cannot read {}: {e}", file.display()));
                    break;
                }
            };
            let payload = PutPayload::from(data);
            with_retries(retries, secrets, "upload", &object, || {
                store.put(&object, payload.clone())
            })
            .await
            .map(drop)
        };
        match put {
            Ok(_) => uploaded.push(object),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = match failure {
        None => match with_retries(retries, secrets, "remove", &marker, || {
            store.delete(&marker)
        })
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e} (the logs are all there, marked incomplete)"),
        },
        Some(f) => f,
    };
    Err(format!(
        "{failure}{}",
        remove_partial(&store, &uploaded, &marker, secrets).await
    ))
}

/// Removes a failed upload's objects, then its marker; says what is left (empty if nothing).
async fn remove_partial(
    store: &AmazonS3,
    uploaded: &[ObjectPath],
    marker: &ObjectPath,
    secrets: &[String],
) -> String {
    let mut left = 0;
    let mut last_error = None;
    for object in uploaded {
        if let Err(e) = with_retries(1, secrets, "remove", object, || store.delete(object)).await {
            left += 1;
            last_error = Some(e);
        }
    }
    match last_error {
        None => match store.delete(marker).await {
            Ok(()) if uploaded.is_empty() => String::new(),
            Ok(()) => format!("; the {} object(s) uploaded were removed", uploaded.len()),
            Err(e) => format!(
                "; the objects uploaded were removed but not the marker {marker}: {}",
                redact_text(&e.to_string(), secrets)
            ),
        },
        Some(e) => format!(
            "; {left} object(s) uploaded could not be removed ({e}): they stay beside the marker {marker}"
        ),
    }
}

/// Uploads `file` (`size` bytes) to `object` as a multipart upload, reading one part at a
/// time; every request is tried as [`with_retries`] says. When a part or the completion fails
/// for good, the upload is aborted (the store drops its parts); an abort that fails too is
/// named in the error.
async fn upload_in_parts(
    store: &AmazonS3,
    file: &Path,
    size: u64,
    object: &ObjectPath,
    retries: u32,
    secrets: &[String],
) -> Result<(), String> {
    let mut reader =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let id = with_retries(
        retries,
        secrets,
        "start the multipart upload of",
        object,
        || store.create_multipart(object),
    )
    .await?;
    let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
    let mut parts: Vec<PartId> = Vec::new();
    let sent = async {
        loop {
            let mut data = Vec::new();
            (&mut reader)
                .take(part_size)
                .read_to_end(&mut data)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            if data.is_empty() && !parts.is_empty() {
                break;
            }
            let last = (data.len() as u64) < part_size;
            let payload = PutPayload::from(data);
            let idx = parts.len();
            let what = format!("upload part {} of", idx + 1);
            let part = with_retries(retries, secrets, &what, object, || {
                store.put_part(object, &id, idx, payload.clone())
            })
            .await?;
            parts.push(part);
            if last {
                break;
            }
        }
        with_retries(
            retries,
            secrets,
            "complete the multipart upload of",
            object,
            || store.complete_multipart(object, &id, parts.clone()),
        )
        .await
    }
    .await;
    let Err(e) = sent else {
        return Ok(());
    };
    match with_retries(
        retries.min(1),
        secrets,
        "abort the multipart upload of",
        object,
        || store.abort_multipart(object, &id),
    )
    .await
    {
        Ok(()) => Err(format!("{e} (the multipart upload was aborted)")),
        Err(abort) => Err(format!(
            "{e}; {abort}: its parts stay in the bucket (upload id {}) until removed, e.g. by a \
             lifecycle rule that aborts incomplete multipart uploads",
            one_line(&id)
        )),
    }
}

/// Runs `request` until it succeeds or has been tried `1 + retries` times, pausing between
/// tries; each failure is logged (without credentials). A failure that trying again cannot
/// fix ([`not_worth_retrying`]) ends it at once, saying what to check.
async fn with_retries<T, F, Fut>(
    retries: u32,
    secrets: &[String],
    what: &str,
    object: &ObjectPath,
    mut request: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let full = with_causes(&e);
                let text = redact_text(&condense(&full), secrets);
                let tries = if attempt == 1 {
                    "1 try".to_string()
                } else {
                    format!("{attempt} tries")
                };
                if let Some(fix) = not_worth_retrying(&e, &full) {
                    return Err(format!(
                        "cannot {what} {object} ({tries}; retrying cannot help): {fix}; the \
                         store said: {text}"
                    ));
                }
                if attempt > retries {
                    return Err(format!("cannot {what} {object} ({tries}): {text}"));
                }
                tracing::warn!(
                    object = %object,
                    attempt,
                    "cannot {what} an object of the job's logs, trying again in {} ms: {text}",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// What to fix when trying `e` again cannot succeed (`text` is `e` with its causes): the keys
/// refused (401, 403), no such bucket (404), a request the store calls bad (400 but a
/// request timeout, other 4xx but 408 and 429), a request the store's client cannot make.
/// `None` for what may pass on another try: no connection, a timeout, 5xx, 429 and 503
/// (slow down), a reply cut short.
fn not_worth_retrying(e: &object_store::Error, text: &str) -> Option<&'static str> {
    use object_store::Error as E;
    let status = match e {
        E::Unauthenticated { .. } => 401,
        E::PermissionDenied { .. } => 403,
        E::NotFound { .. } => 404,
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. } => return Some("the store's client cannot make this request"),
        E::Generic { source, .. } if !has_cause::<HttpError>(source.as_ref()) => status_in(text)?,
        _ => return None,
    };
    let code = |c: &str| text.contains(c);
    match status {
        401 | 403 if code("InvalidAccessKeyId") => Some(
            "access denied, the store does not know the access key: check \
             publish_logs.access_key_id",
        ),
        401 | 403 if code("SignatureDoesNotMatch") => Some(
            "access denied, the request's signature does not match: check \
             publish_logs.secret_access_key",
        ),
        401 | 403 if code("RequestTimeTooSkewed") => {
            Some("access denied, this host's clock is off: set it right (NTP)")
        }
        401 | 403 => Some(
            "access denied: check publish_logs.access_key_id/secret_access_key and the bucket \
             policy (the keys need s3:PutObject and s3:DeleteObject under the prefix)",
        ),
        404 if code("NoSuchBucket") => {
            Some("no such bucket: check publish_logs.bucket (and endpoint, region)")
        }
        404 if code("NoSuchUpload") => {
            Some("the multipart upload is gone (aborted, or expired by a lifecycle rule)")
        }
        404 => Some("not found: check publish_logs.bucket, endpoint and region"),
        400 if code("RequestTimeout") => None,
        400 if code("EntityTooSmall") => Some(
            "the store wants bigger parts than turbo-hipster's 8 MiB (all but the last): it is \
             not S3-compatible there",
        ),
        400 if code("AuthorizationHeaderMalformed") => {
            Some("bad request, the store expects another region: check publish_logs.region")
        }
        400 => Some(
            "bad request: check publish_logs.bucket, endpoint and region (the store refused \
             the request itself)",
        ),
        408 | 429 => None,
        401..=499 => Some(
            "the store refused the request: check publish_logs.endpoint (an S3 API?), bucket \
             and region",
        ),
        _ => None,
    }
}

/// Whether `e` or one of its causes is a `C`.
fn has_cause<C: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(e) = current {
        if e.is::<C>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The HTTP status the store's error text quotes (`… non-2xx status code: 403 Forbidden …`).
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text[at..].get(..3)?.parse().ok()
}

/// The regular files of the results, with their names relative to `results_dir` (`/`
/// separated), sorted; the work dir is left out once `job.json` is there (as when publishing
/// to a directory). Symbolic links are not followed.
fn result_files(results_dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    let skip_work = results_dir.join(JOB_SUMMARY).exists();
    let mut pending = vec![(results_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_dir() {
                if !(rel.is_empty() && skip_work && name == WORK_DIR) {
                    pending.push((entry.path(), child));
                }
            } else if kind.is_file() {
                files.push((entry.path(), child));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// `e` and its causes, `: ` separated (the store's own text stops at "error sending request").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// An error of the store on one line: an S3 error document (`<?xml …><Error><Code>…`) becomes
/// `Code: Message`, line breaks become spaces.
fn condense(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..start + len])
    };
    let text = match (
        text.find("<?xml").or_else(|| text.find("<Error>")),
        tag("Code"),
    ) {
        (Some(at), Some(code)) => {
            let message = tag("Message").map(|m| format!(": {m}")).unwrap_or_default();
            format!("{}{code}{message}", &text[..at])
        }
        _ => text.to_string(),
    };
    one_line(&text.split_whitespace().collect::<Vec<_>>().join(" ")).into_owned()
}

/// `text` with every credential replaced by `***`.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), REDACTED);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_cut_out_of_text() {
        let secrets = ["AKIDEXAMPLE".to_string(), "s3cr3t/K+y".to_string()];
        assert_eq!(
            redact_text("key AKIDEXAMPLE sig s3cr3t/K+y end", &secrets),
            "key *** sig *** end"
        );
    }

    #[test]
    fn a_store_error_document_reads_as_one_line() {
        let e = "Error performing PUT http://h/b/k in 5ms - Server returned non-2xx status code: \
                 403 Forbidden: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>InvalidAccessKeyId\
                 </Code><Message>The key you provided does not exist.</Message><AWSAccessKeyId>AK\
                 </AWSAccessKeyId></Error>";
        assert_eq!(
            condense(e),
            "Error performing PUT http://h/b/k in 5ms - Server returned non-2xx status code: 403 \
             Forbidden: InvalidAccessKeyId: The key you provided does not exist."
        );
        // Control characters are escaped as the SDK's `one_line` does, a NUL too.
        assert_eq!(condense("a\n  b\u{1}"), "a b\\u{1}");
        assert_eq!(condense("a\u{1b}[2J\0b"), "a\\u{1b}[2J\\0b");
    }

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    fn verdict(e: &object_store::Error) -> Option<&'static str> {
        not_worth_retrying(e, &with_causes(e))
    }

    #[test]
    fn only_failures_a_retry_can_fix_are_retried() {
        let status = |s: &str| {
            generic(&format!(
                "Error performing PUT http://h/b/k in 5ms - Server returned non-2xx status code: {s}"
            ))
        };
        // Retried: the store busy or failing, a slow-down, a request timeout, no status.
        for s in [
            "500 Internal Server Error: InternalError",
            "503 Service Unavailable: SlowDown: Please reduce your request rate.",
            "429 Too Many Requests: ",
            "408 Request Timeout: ",
            "400 Bad Request: RequestTimeout: Your socket connection to the server was not read",
        ] {
            assert_eq!(verdict(&status(s)), None, "{s}");
        }
        assert_eq!(verdict(&generic("error sending request")), None);
        // Not retried, each saying what to check.
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403 Forbidden: SignatureDoesNotMatch: The request signature".into(),
        };
        assert!(
            verdict(&denied).is_some_and(|m| m.contains("check publish_logs.secret_access_key"))
        );
        let unknown = object_store::Error::Unauthenticated {
            path: "k".into(),
            source: "401 Unauthorized".into(),
        };
        assert!(verdict(&unknown).is_some_and(|m| m.starts_with(
            "access denied: check \
             publish_logs.access_key_id/secret_access_key and the bucket policy"
        )));
        let bucket = object_store::Error::NotFound {
            path: "k".into(),
            source: "404 Not Found: NoSuchBucket".into(),
        };
        assert!(verdict(&bucket).is_some_and(|m| m.starts_with("no such bucket")));
        for (s, hint) in [
            ("400 Bad Request: InvalidBucketName", "bad request: "),
            (
                "400 Bad Request: AuthorizationHeaderMalformed",
                "bad request, ",
            ),
            ("403 Forbidden: AccessDenied", "access denied: "),
            ("405 Method Not Allowed: ", "the store refused"),
        ] {
            assert!(
                verdict(&status(s)).is_some_and(|m| m.starts_with(hint)),
                "{s}: {:?}",
                verdict(&status(s))
            );
        }
    }

    #[test]
    fn the_work_dir_is_not_published_once_the_record_is_there() {
        let d = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(d.path().join(WORK_DIR).join("x")).expect("dirs");
        std::fs::create_dir_all(d.path().join("logs")).expect("dirs");
        std::fs::write(d.path().join(WORK_DIR).join("x/f"), "w").expect("write");
        std::fs::write(d.path().join("logs/a.log"), "a").expect("write");
        std::fs::write(d.path().join("task_output.log"), "t").expect("write");
        let names = |d: &Path| -> Vec<String> {
            result_files(d)
                .expect("list")
                .into_iter()
                .map(|(_, rel)| rel)
                .collect()
        };
        assert_eq!(
            names(d.path()),
            ["logs/a.log", "task_output.log", &format!("{WORK_DIR}/x/f")]
        );
        std::fs::write(d.path().join(JOB_SUMMARY), "{}").expect("write");
        assert_eq!(
            names(d.path()),
            [JOB_SUMMARY, "logs/a.log", "task_output.log"]
        );
    }
}
