//! Text from outside (config keys, file contents) made safe to print as one line.

use std::borrow::Cow;

/// `s` as one printable line: control characters (a newline, a terminal escape) are written
/// escaped, so that a message quoting a key or value from a file stays one line and cannot pose
/// as another. Borrowed when there is nothing to escape.
///
/// ```
/// use turbo_hipster_sdk::support::text::one_line;
/// assert_eq!(one_line("plain"), "plain");
/// assert_eq!(one_line("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
/// ```
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}
