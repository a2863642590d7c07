//! Logging through tracing-subscriber: pretty or JSON, filtered by `RUST_LOG` (default info).
//!
//! A JSON line is one object: `timestamp` (RFC 3339, microseconds, UTC), `level`, the event's
//! fields at the top level (`message` among them), `target`, and `span`, the event's span as an
//! object of its fields and its `name` (the RPC's span: `method`, `tenant`, `principal`,
//! `act_as`, and `trace_id`, `parent_span_id` when the caller sent a `traceparent`). It is the
//! shape tracing-subscriber's own JSON format writes (flattened events, the current span only),
//! written directly ([`JsonLine`], [`JsonFields`]): that format kept a span's fields as JSON
//! text, parsed it back into a map for every line and wrote the map out again, a tenth of a
//! GetConversation's CPU with the rest of its line.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. Fails if one is already installed.
///
/// `RUST_LOG` made only of targets and levels (`info`, `parley_server=debug,sqlx=warn`, the
/// usual case) is a [`Targets`] filter, which judges a span or an event by its target and
/// level alone. Anything else (span or field directives) takes [`EnvFilter`], which follows
/// every span it might care about as requests enter and leave it: under ListParticipants its
/// bookkeeping (a lock per span entered and left) was 1.6 % of the server's CPU (perf, PG).
pub fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    let directives = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let directives = match directives.trim() {
        "" => "info",
        given => given,
    };
    let result = match targets_only(directives) {
        Some(targets) => install(tracing_subscriber::registry().with(targets), format)
            .map_err(|e| anyhow::anyhow!("{e}")),
        None => {
            let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            match format {
                LogFormat::Pretty => builder.compact().try_init(),
                LogFormat::Json => builder
                    .fmt_fields(JsonFields)
                    .event_format(JsonLine)
                    .try_init(),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// `directives` as a [`Targets`] filter, if they are targets and levels only. Targets would
/// take a span directive (`[rpc]=info`) for a target's name: those are left to [`EnvFilter`].
fn targets_only(directives: &str) -> Option<Targets> {
    let plain = directives
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_:=, ".contains(c));
    directives.parse::<Targets>().ok().filter(|_| plain)
}

/// Installs `filtered` with the formatting layer of `format`, writing to stderr.
fn install<S>(filtered: S, format: LogFormat) -> Result<(), tracing_subscriber::util::TryInitError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => filtered.with(layer.compact()).try_init(),
        LogFormat::Json => filtered
            .with(layer.fmt_fields(JsonFields).event_format(JsonLine))
            .try_init(),
    }
}

/// Writes a span's or an event's fields as the members of a JSON object (`"a":1,"b":"x"`,
/// without the braces), so that a span's, formatted once when it is made, goes into each of
/// its lines as it is.
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Members {
            first: current.fields.is_empty(),
            out: &mut current.fields,
            result: Ok(()),
        };
        fields.record(&mut members);
        members.result
    }
}

/// One JSON line per event (see the module documentation).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(
            writer,
            "{{\"timestamp\":\"{}\",\"level\":\"{}\"",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            meta.level()
        )?;
        let mut members = Members {
            out: &mut writer,
            first: false,
            result: Ok(()),
        };
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field it visits as a JSON object's member, after a comma unless it is the
/// first.
struct Members<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Members<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Members<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            // JSON has no NaN nor infinity.
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `s` as a JSON string, quotes and all.
fn string<W: fmt::Write>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if u32::from(c) < 0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets and levels go to the cheap filter; span and field directives to EnvFilter.
    #[test]
    fn plain_directives_are_targets() {
        use tracing::Level;
        let targets = targets_only("parley_server::api=debug,warn").expect("plain");
        assert!(targets.would_enable("parley_server::api", &Level::DEBUG));
        assert!(!targets.would_enable("sqlx", &Level::INFO));
        assert!(targets.would_enable("sqlx", &Level::WARN));
        assert!(targets_only("info").is_some());
        for dynamic in [
            "warn,[rpc]=info",
            "[rpc{method=GetConversation}]=debug",
            "a=debug/x",
        ] {
            assert!(targets_only(dynamic).is_none(), "{dynamic}");
        }
    }

    #[test]
    fn strings_are_escaped_as_json_reads_them() {
        let tricky = "a \"quote\", a \\ and\na line\tand \u{1} and é";
        let mut out = String::new();
        string(&mut out, tricky).expect("written");
        let read: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(read, tricky);
    }

    #[test]
    fn a_line_is_one_json_object_with_its_span() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                crate::lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(JsonFields)
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                method = "GetConversation",
                tenant = Some("acme"),
                principal = None::<&str>,
                act_as = ""
            );
            let _entered = span.enter();
            tracing::info!(code = ?tonic::Code::NotFound, reason = "CONVERSATION_NOT_FOUND", latency_ms = 1.5, "rpc");
            tracing::warn!(error = %"a \"quoted\"\nerror", "outside");
        });
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_writer({
                    let sink = lines.clone();
                    move || sink.clone()
                })
                .fmt_fields(JsonFields)
                .event_format(JsonLine)
                .finish(),
            || tracing::info!(count = 3u64, ok = true, "no span"),
        );
        let text = String::from_utf8(crate::lock(&lines.0).clone()).expect("utf-8");
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 3, "{text}");
        let rpc = &parsed[0];
        assert_eq!(rpc["level"], "INFO");
        assert_eq!(rpc["message"], "rpc");
        assert_eq!(rpc["code"], "NotFound");
        assert_eq!(rpc["reason"], "CONVERSATION_NOT_FOUND");
        assert_eq!(rpc["latency_ms"], 1.5);
        assert_eq!(rpc["target"], "parley_server::telemetry::tests");
        assert_eq!(
            rpc["span"],
            serde_json::json!({"method": "GetConversation", "tenant": "acme", "act_as": "", "name": "rpc"})
        );
        let stamp = rpc["timestamp"].as_str().expect("a timestamp");
        assert!(
            stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        assert_eq!(parsed[1]["error"], "a \"quoted\"\nerror");
        assert_eq!(parsed[1]["level"], "WARN");
        assert_eq!(parsed[2]["count"], 3);
        assert_eq!(parsed[2]["ok"], true);
        assert!(parsed[2].get("span").is_none(), "{text}");
    }
}
