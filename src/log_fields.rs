//! `logger.excludeFields` (Dex HEAD): named attributes are dropped from every log
//! record, events and spans alike, in both formats. Text records are formatted
//! without them; JSON records are filtered as whole objects before they reach
//! stderr, so a nested span field of that name goes too.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;

/// The attribute names to drop.
#[derive(Debug, Clone, Default)]
pub struct Excluded(Arc<BTreeSet<String>>);

impl Excluded {
    pub fn new(names: &[String]) -> Self {
        Self(Arc::new(names.iter().cloned().collect()))
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Text fields as the default formatter writes them (`message` first and bare,
/// then `name=value`), without the excluded ones.
pub struct TextFields(pub Excluded);

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            excluded: &self.0,
            out: String::new(),
        };
        fields.record(&mut visitor);
        writer.write_str(&visitor.out)
    }
}

struct TextVisitor<'a> {
    excluded: &'a Excluded,
    out: String,
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.excluded.contains(name) {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let _ = if name == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{name}={value:?}")
        };
    }
}

/// Writes JSON records to stderr with the excluded keys removed (at the top
/// level, and inside `span` and `spans`).
#[derive(Clone)]
pub struct FilteredJson(pub Excluded);

impl<'a> MakeWriter<'a> for FilteredJson {
    type Writer = JsonRecord;

    fn make_writer(&'a self) -> Self::Writer {
        JsonRecord {
            excluded: self.0.clone(),
            buffer: Vec::new(),
        }
    }
}

/// One record, buffered until it is complete (the formatter writes a record
/// and then drops its writer).
pub struct JsonRecord {
    excluded: Excluded,
    buffer: Vec<u8>,
}

impl Write for JsonRecord {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for JsonRecord {
    fn drop(&mut self) {
        let filtered = filter_json_lines(&self.buffer, &self.excluded);
        let _ = io::stderr().lock().write_all(&filtered);
    }
}

fn filter_json_lines(bytes: &[u8], excluded: &Excluded) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        // A line that is not JSON (cannot happen with the JSON formatter) is
        // dropped rather than risk writing an excluded value.
        if let Ok(mut record) = serde_json::from_slice::<Value>(line) {
            strip(&mut record, excluded);
            if let Some(spans) = record.get_mut("spans").and_then(Value::as_array_mut) {
                spans.iter_mut().for_each(|span| strip(span, excluded));
            }
            if let Some(span) = record.get_mut("span") {
                strip(span, excluded);
            }
            let _ = serde_json::to_writer(&mut out, &record);
            out.push(b'\n');
        }
    }
    out
}

fn strip(object: &mut Value, excluded: &Excluded) {
    if let Some(map) = object.as_object_mut() {
        map.retain(|key, _| !excluded.contains(key));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_records_lose_excluded_keys_also_in_spans() {
        let excluded = Excluded::new(&["email".to_owned(), "groups".to_owned()]);
        let line = br#"{"timestamp":"t","level":"INFO","message":"login","email":"a@b","client_id":"c","span":{"email":"a@b","name":"request"},"spans":[{"groups":["x"],"name":"request"}]}
"#;
        let out = String::from_utf8(filter_json_lines(line, &excluded)).unwrap();
        assert!(!out.contains("a@b") && !out.contains("groups"), "{out}");
        assert!(
            out.contains("\"client_id\":\"c\"") && out.contains("\"message\":\"login\""),
            "{out}"
        );
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn text_fields_skip_excluded_names() {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(TextFields(Excluded::new(&["email".to_owned()])))
            .with_writer(move || Capture(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(email = "a@b", client_id = "c", "login done");
        });
        let out = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        assert!(out.contains("login done client_id=\"c\""), "{out}");
        assert!(!out.contains("a@b"), "{out}");
    }

    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
