//! The server's logs (tracing-subscriber's fmt layer on stderr), text or JSON.
//!
//! Field values and messages can carry text a client chose (a participant id named in a
//! request, the key id of a presented key, an error quoting an id). In the text format every
//! control character in them is escaped (`\n`, `\r`, `\t`, `\u{1b}`, ...), as are the Unicode
//! line and paragraph separators and bidirectional overrides, so such text can neither end a
//! log line and forge the next one nor send escape sequences to a terminal. The JSON format
//! escapes control characters itself (it is JSON); it is left as tracing-subscriber writes it.

use std::fmt::{self, Write};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Installs the global subscriber: `format` is "text" or "json"; the level comes from
/// `RUST_LOG` (default "info").
pub fn init(format: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        "text" => builder.fmt_fields(escaped_fields()).init(),
        "json" => builder.json().init(),
        other => return Err(format!("--log-format must be text or json, not {other:?}")),
    }
    Ok(())
}

/// The text format's field formatter: `name=value` pairs separated by spaces (the message
/// bare), like tracing-subscriber's default, with every value escaped by [`Escaping`].
pub fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer: &mut Writer<'_>, field, value| {
        if field.name() != "message" {
            // Field names are identifiers in the source, never input.
            write!(writer, "{}=", field.name())?;
        }
        write!(Escaping(writer), "{value:?}")
    })
    .delimited(" ")
}

/// A `fmt::Write` that escapes, on the way through, every character that could end a log
/// line or drive a terminal: C0 and C1 controls and DEL (`char::is_control`), the Unicode line
/// and paragraph separators, and bidirectional marks and overrides.
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(must_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        Escaping(&mut out).write_str(text).unwrap();
        out
    }

    #[test]
    fn control_characters_separators_and_bidi_marks_are_escaped() {
        assert_eq!(escaped("plain, ñandú ✓"), "plain, ñandú ✓");
        assert_eq!(escaped("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escaped("\x1b[31mred\x07\x7f"), "\\u{1b}[31mred\\u{7}\\u{7f}");
        assert_eq!(escaped("\u{9b}31m\u{85}"), "\\u{9b}31m\\u{85}");
        assert_eq!(escaped("x\u{2028}y\u{202e}z\u{2066}"), "x\\u{2028}y\\u{202e}z\\u{2066}");
        assert_eq!(escaped(""), "");
    }

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_event_with_a_forged_line_in_every_kind_of_field_stays_one_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .finish();
        let forged = "x\n2026-01-01T00:00:00.000000Z  INFO forged: approved\x1b[2K\u{9b}0m";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", participant = %forged, key_id = forged);
            let _enter = span.enter();
            let error = std::io::Error::other(forged.to_owned());
            tracing::info!(reference = %forged, note = forged, debug = ?forged, %error, "refused {forged}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(!text.contains('\x1b') && !text.contains('\u{9b}'), "{text:?}");
        assert!(!text.lines().any(|line| line.starts_with("2026-01-01")), "{text}");
        // Display fields, the message and span fields are escaped, not dropped.
        for needle in
            ["reference=x\\n2026-01-01", "refused x\\n2026", "participant=x\\n2026", "error=x\\n2026"]
        {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }
}
