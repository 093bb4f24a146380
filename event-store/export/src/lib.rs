//! `eshop events export`: the stored events for analysts, upcast to the
//! current schemas, in the global order, as NDJSON (one CloudEvents
//! envelope per line, exactly what the relay publishes) or CSV.
//!
//! What is exported is what was committed when the export started: the
//! pages are read in one `REPEATABLE READ, READ ONLY` transaction, so an
//! export is one consistent picture of the store, whatever is appended
//! while it runs. Unlike the relay it keeps no position and so reads past
//! the horizon of `event_store::feed` (events committed above a still
//! running transaction are included; that transaction's own events are
//! not, as they are not committed yet). A read-only transaction takes no
//! transaction id, so a long export never holds back the relay's horizon;
//! it does hold back vacuum of `events` while it runs.
//!
//! Memory does not grow with the store: pages of [`PAGE_SIZE`] rows are
//! read by keyset on `(transaction_id, global_position)` (an index walk)
//! and handed, still as rows, to a writer thread through a channel of two
//! pages, so at most four pages are held at once. The writer decodes,
//! upcasts and writes one event at a time through a `BufWriter`, off the
//! async runtime. A reader that closes the output early (`| head`) ends the
//! export quietly.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use event_schemas::Envelope;
use event_store::DatabaseConfig;
use event_store::StoreError;
use event_store::feed::{self, GlobalPosition};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use read_models::event::envelope_of;

/// Events read per query.
pub const PAGE_SIZE: i64 = 1000;

/// Pages waiting for the writer at most.
const PAGES_IN_FLIGHT: usize = 2;

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The `application_name` of an export's connection.
const APPLICATION_NAME: &str = "eshop-export";

/// What to export, and where (`eshop events export --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ExportOptions {
    /// Export events from here on (inclusive): a global position (an
    /// integer, the envelope's `globalposition`), or an RFC 3339 time such
    /// as 2026-01-31T00:00:00Z, compared with the envelope's `time` (when
    /// the event occurred, from its metadata; not when it was stored).
    #[arg(long, value_name = "POSITION|TIME")]
    pub from: Option<Bound>,

    /// Export events up to here (inclusive): a global position or an RFC
    /// 3339 time, as for --from.
    #[arg(long, value_name = "POSITION|TIME")]
    pub to: Option<Bound>,

    /// Only events of these types, named as in the envelope's `type`:
    /// eshop.{AggregateType}.{EventType}, for example
    /// eshop.Order.OrderPlaced (a bare OrderPlaced works too). Repeat the
    /// flag or separate types with commas.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<EventTypeName>,

    /// Only events of this aggregate type: Product, Basket or Order.
    #[arg(long, value_name = "AGGREGATE_TYPE", value_parser = parse_aggregate_type)]
    pub aggregate_type: Option<String>,

    /// Only events of this aggregate (the envelope's `aggregateid`).
    #[arg(long, value_name = "ID")]
    pub aggregate_id: Option<String>,

    /// ndjson: one CloudEvents envelope per line, as the relay publishes
    /// it. csv: a header row, then one row per event with the envelope's
    /// attributes as columns and `data` as a JSON string.
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    pub format: Format,

    /// Write to this file (created or truncated) instead of stdout. An
    /// export that fails leaves what it wrote so far.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON envelope per line.
    Ndjson,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
}

/// One end of the exported range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A global position (`events.global_position`).
    Position(i64),
    /// When the event occurred (the envelope's `time`).
    Time(DateTime<Utc>),
}

impl FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(position) = s.parse::<i64>() {
            return if position < 0 {
                Err(format!("a global position is not negative, got {position}"))
            } else {
                Ok(Self::Position(position))
            };
        }
        DateTime::parse_from_rfc3339(s)
            .map(|time| Self::Time(time.with_timezone(&Utc)))
            .map_err(|error| {
                format!(
                    "expected a global position (an integer) or an RFC 3339 time such as \
                     2026-01-31T00:00:00Z ({error})"
                )
            })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Position(position) => write!(f, "{position}"),
            Self::Time(time) => f.write_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

/// The public event types of the contract, `eshop.{AggregateType}.{EventType}`.
static EVENT_TYPES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut types: Vec<String> = event_schemas::schemas::generate()
        .into_iter()
        .filter_map(|(_, schema)| {
            let title = schema.get("title")?.as_str()?;
            (title.split('.').count() == 3).then(|| title.to_owned())
        })
        .collect();
    types.sort();
    types.dedup();
    types
});

/// The contract's aggregate types.
fn aggregate_types() -> Vec<&'static str> {
    let mut types: Vec<&str> = EVENT_TYPES
        .iter()
        .filter_map(|name| name.split('.').nth(1))
        .collect();
    types.dedup();
    types
}

fn parse_aggregate_type(s: &str) -> Result<String, String> {
    let known = aggregate_types();
    if known.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown aggregate type; expected one of {}",
            known.join(", ")
        ))
    }
}

/// An event type as given to `--type`, resolved against the contract to
/// the `(aggregate type, event type)` pairs it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeName {
    /// `Aggregate.Event` pairs, as stored in `events`.
    stored: Vec<String>,
}

impl FromStr for EventTypeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let stored: Vec<String> = EVENT_TYPES
            .iter()
            .filter(|public| {
                public.as_str() == s || public.rsplit('.').next().is_some_and(|event| event == s)
            })
            .filter_map(|public| public.strip_prefix("eshop.").map(str::to_owned))
            .collect();
        if stored.is_empty() {
            Err(format!(
                "unknown event type; expected eshop.{{AggregateType}}.{{EventType}}, one of {}",
                EVENT_TYPES.join(", ")
            ))
        } else {
            Ok(Self { stored })
        }
    }
}

/// Why the options select nothing sensible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: Bound, to: Bound },
}

/// Which events to export, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub from_position: Option<i64>,
    pub to_position: Option<i64>,
    pub from_time: Option<DateTime<Utc>>,
    pub to_time: Option<DateTime<Utc>>,
    /// `Aggregate.Event` pairs; empty for every type.
    pub types: Vec<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
}

impl Filter {
    /// The filter the options describe; refuses a range whose start is
    /// after its end.
    pub fn of(options: &ExportOptions) -> Result<Self, OptionsError> {
        let mut filter = Self {
            types: options
                .types
                .iter()
                .flat_map(|name| name.stored.iter().cloned())
                .collect(),
            aggregate_type: options.aggregate_type.clone(),
            aggregate_id: options.aggregate_id.clone(),
            ..Self::default()
        };
        filter.types.sort();
        filter.types.dedup();
        match options.from {
            Some(Bound::Position(p)) => filter.from_position = Some(p),
            Some(Bound::Time(t)) => filter.from_time = Some(t),
            None => {}
        }
        match options.to {
            Some(Bound::Position(p)) => filter.to_position = Some(p),
            Some(Bound::Time(t)) => filter.to_time = Some(t),
            None => {}
        }
        let reversed = matches!((filter.from_position, filter.to_position), (Some(f), Some(t)) if f > t)
            || matches!((filter.from_time, filter.to_time), (Some(f), Some(t)) if f > t);
        if let (true, Some(from), Some(to)) = (reversed, options.from, options.to) {
            return Err(OptionsError::EmptyRange { from, to });
        }
        Ok(filter)
    }

    /// Whether an event that occurred at `time` is in the time range.
    #[must_use]
    pub fn admits_time(&self, time: DateTime<Utc>) -> bool {
        self.from_time.is_none_or(|from| time >= from) && self.to_time.is_none_or(|to| time <= to)
    }

    /// The page query: events after a cursor (`$1` transaction id as text,
    /// `$2` position) in the global order, then one parameter per condition
    /// present, in the order [`Self::page`] binds them, and the limit last.
    /// The time range is checked on the upcast envelope, not here.
    fn page_sql(&self) -> String {
        let mut conditions =
            vec!["(events.transaction_id, events.global_position) > ($1::text::xid8, $2)"];
        let present = [
            (self.from_position.is_some(), "events.global_position >= $?"),
            (self.to_position.is_some(), "events.global_position <= $?"),
            (
                !self.types.is_empty(),
                "events.aggregate_type || '.' || events.event_type = ANY($?)",
            ),
            (self.aggregate_type.is_some(), "events.aggregate_type = $?"),
            (self.aggregate_id.is_some(), "events.aggregate_id = $?"),
        ];
        conditions.extend(
            present
                .iter()
                .filter(|(present, _)| *present)
                .map(|(_, condition)| *condition),
        );
        let mut sql = format!(
            "SELECT {} FROM events WHERE {} \
             ORDER BY events.transaction_id, events.global_position LIMIT $?",
            feed::COLUMNS,
            conditions.join(" AND ")
        );
        let mut n = 2;
        while let Some(at) = sql.find("$?") {
            n += 1;
            sql.replace_range(at..at + 2, &format!("${n}"));
        }
        sql
    }

    /// Reads the next page after `after`, as rows: a row holds its JSON as
    /// text, far smaller than decoded, so the writer decodes one at a time.
    async fn page(
        &self,
        sql: &str,
        conn: &mut PgConnection,
        after: GlobalPosition,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let mut query = sqlx::query(sql)
            .bind(after.transaction_id.to_string())
            .bind(after.position);
        if let Some(position) = self.from_position {
            query = query.bind(position);
        }
        if let Some(position) = self.to_position {
            query = query.bind(position);
        }
        if !self.types.is_empty() {
            query = query.bind(&self.types);
        }
        if let Some(aggregate_type) = &self.aggregate_type {
            query = query.bind(aggregate_type);
        }
        if let Some(aggregate_id) = &self.aggregate_id {
            query = query.bind(aggregate_id);
        }
        query.bind(PAGE_SIZE).fetch_all(conn).await
    }
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Events written.
    pub events: u64,
    /// Whether the reader closed the output before the end.
    pub output_closed: bool,
}

/// Where the rows go.
enum Output {
    Stdout,
    File(File),
}

/// Exports the events the options select, as committed when it starts.
/// Invalid options fail before anything is read or written.
pub async fn run(database: &DatabaseConfig, options: &ExportOptions) -> anyhow::Result<Summary> {
    let filter = Filter::of(options)?;
    let output = match &options.output {
        Some(path) => Output::File(
            File::create(path).with_context(|| format!("failed to create {}", path.display()))?,
        ),
        None => Output::Stdout,
    };
    let connect = PgConnectOptions::from_str(&database.url)
        .context("invalid DATABASE_URL")?
        .application_name(APPLICATION_NAME);
    let mut conn = PgConnection::connect_with(&connect)
        .await
        .context("failed to connect to the event store")?;
    // One snapshot for every page: the export is what was committed now.
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .context("failed to start the export's transaction")?;
    tracing::info!(
        format = ?options.format,
        output = %options.output.as_ref().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string()),
        from = options.from.map(|b| b.to_string()),
        to = options.to.map(|b| b.to_string()),
        types = %filter.types.join(","),
        aggregate_type = filter.aggregate_type.as_deref(),
        aggregate_id = filter.aggregate_id.as_deref(),
        "exporting events"
    );
    let started = Instant::now();
    let (pages, received) = mpsc::channel::<Vec<PgRow>>(PAGES_IN_FLIGHT);
    let writer = {
        let filter = filter.clone();
        let format = options.format;
        tokio::task::spawn_blocking(move || write_all(received, output, format, &filter))
    };
    let sql = filter.page_sql();
    let mut after = GlobalPosition::default();
    let read: Result<(), StoreError> = loop {
        let page = match filter.page(&sql, &mut tx, after).await {
            Ok(page) => page,
            Err(error) => break Err(error.into()),
        };
        let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= PAGE_SIZE;
        let Some(last) = page.last() else {
            break Ok(());
        };
        match feed::decode(last) {
            Ok(last) => after = last.global,
            Err(error) => break Err(error),
        }
        // The writer stopped (an error, or the reader went away): it says why.
        if pages.send(page).await.is_err() || !full {
            break Ok(());
        }
    };
    drop(pages);
    let written = writer.await.context("the export's writer panicked")?;
    read.context("failed to read events")?;
    match written {
        Ok(events) => {
            tracing::info!(
                events,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "events exported"
            );
            Ok(Summary {
                events,
                output_closed: false,
            })
        }
        Err(WriteError::Closed { events }) => {
            tracing::info!(
                events,
                "the output was closed by its reader; export stopped"
            );
            Ok(Summary {
                events,
                output_closed: true,
            })
        }
        Err(WriteError::Io(error)) => Err(error).context("failed to write the export"),
        Err(WriteError::Decode(error)) => Err(error).context("failed to decode a stored event"),
    }
}

#[derive(Debug)]
enum WriteError {
    /// The reader closed the output (a broken pipe) after `events`.
    Closed {
        events: u64,
    },
    Io(io::Error),
    Decode(StoreError),
}

/// Writes every page received, then flushes. Runs on a blocking thread:
/// the output may be slower than the database.
fn write_all(
    mut pages: mpsc::Receiver<Vec<PgRow>>,
    output: Output,
    format: Format,
    filter: &Filter,
) -> Result<u64, WriteError> {
    let stdout = io::stdout();
    // A spinner on the terminal that shows the rows would garble them.
    let spinner =
        io::stderr().is_terminal() && !(matches!(output, Output::Stdout) && stdout.is_terminal());
    let sink: Box<dyn Write> = match output {
        Output::Stdout => Box::new(stdout.lock()),
        Output::File(file) => Box::new(file),
    };
    let mut rows = Rows::new(BufWriter::with_capacity(256 * 1024, sink), format);
    let upcasters = event_schemas::upcasters();
    let mut progress = Progress::new(spinner);
    let result = (|| {
        rows.header().map_err(WriteError::Io)?;
        while let Some(page) = pages.blocking_recv() {
            let mut position = None;
            for row in &page {
                let event = feed::decode(row).map_err(WriteError::Decode)?;
                let envelope = envelope_of(&event, &upcasters);
                position = Some(event.global.position);
                if filter.admits_time(envelope.time) {
                    rows.write(&envelope).map_err(WriteError::Io)?;
                    progress.events += 1;
                }
            }
            if let Some(position) = position {
                progress.page_done(position);
            }
        }
        rows.flush().map_err(WriteError::Io)
    })();
    progress.finish();
    match result {
        Ok(()) => Ok(progress.events),
        Err(WriteError::Io(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            Err(WriteError::Closed {
                events: progress.events,
            })
        }
        Err(error) => Err(error),
    }
}

/// The columns of the CSV format: the envelope's attributes, `data` last
/// as a JSON string.
pub const CSV_COLUMNS: [&str; 15] = [
    "globalposition",
    "id",
    "type",
    "schemaversion",
    "aggregatetype",
    "aggregateid",
    "aggregatesequence",
    "time",
    "source",
    "dataschema",
    "correlationid",
    "causationid",
    "actor",
    "traceparent",
    "data",
];

/// Envelopes written in one format.
enum Rows<W: Write> {
    Ndjson(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> Rows<W> {
    fn new(sink: W, format: Format) -> Self {
        match format {
            Format::Ndjson => Self::Ndjson(sink),
            Format::Csv => Self::Csv(Box::new(csv::WriterBuilder::new().from_writer(sink))),
        }
    }

    fn header(&mut self) -> io::Result<()> {
        match self {
            Self::Ndjson(_) => Ok(()),
            Self::Csv(csv) => csv.write_record(CSV_COLUMNS).map_err(csv_io),
        }
    }

    fn write(&mut self, envelope: &Envelope) -> io::Result<()> {
        match self {
            Self::Ndjson(out) => {
                serde_json::to_writer(&mut *out, envelope).map_err(io::Error::from)?;
                out.write_all(b"\n")
            }
            Self::Csv(csv) => {
                let record = [
                    envelope.globalposition.to_string(),
                    envelope.id.to_string(),
                    envelope.event_type.clone(),
                    envelope.schemaversion.clone(),
                    envelope.aggregatetype.clone(),
                    envelope.aggregateid.clone(),
                    envelope.aggregatesequence.to_string(),
                    envelope.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    envelope.source.clone(),
                    envelope.dataschema.clone(),
                    envelope.correlationid.clone(),
                    envelope.causationid.clone(),
                    envelope.actor.clone(),
                    envelope.traceparent.clone().unwrap_or_default(),
                    serde_json::to_string(&envelope.data)?,
                ];
                csv.write_record(&record).map_err(csv_io)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Ndjson(out) => out.flush(),
            Self::Csv(csv) => csv.flush(),
        }
    }
}

/// A CSV error as the I/O error it is (records are always well formed).
fn csv_io(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// Progress on stderr: a spinner with the count and rate when stderr is a
/// terminal (that does not also show the rows), a log line every
/// [`LOG_EVERY`] otherwise.
struct Progress {
    events: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(spinner: bool) -> Self {
        let bar = spinner.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} exporting: {human_pos} events  {msg}  {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            events: 0,
            started: now,
            last_log: now,
            bar,
        }
    }

    fn page_done(&mut self, position: i64) {
        let rate = self.events as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if let Some(bar) = &self.bar {
            bar.set_position(self.events);
            bar.set_message(format!("{rate:.0} events/s"));
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(
                events = self.events,
                events_per_sec = rate.round() as u64,
                global_position = position,
                "export progress"
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Result<ExportOptions, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            export: ExportOptions,
        }
        let argv = std::iter::once("export").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|cli| cli.export)
    }

    #[test]
    fn bounds_are_positions_or_rfc_3339_times() {
        assert_eq!("42".parse(), Ok(Bound::Position(42)));
        assert_eq!(
            "2026-01-31T01:00:00+01:00".parse::<Bound>(),
            Ok(Bound::Time(
                DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z")
                    .expect("time")
                    .with_timezone(&Utc)
            ))
        );
        assert!("2026-13-01T00:00:00Z".parse::<Bound>().is_err());
        assert!("yesterday".parse::<Bound>().is_err());
        assert!("-1".parse::<Bound>().is_err());
    }

    #[test]
    fn types_are_the_public_names_or_bare_event_types() {
        let export = options(&[
            "--type",
            "eshop.Order.OrderPlaced,ItemAdded",
            "--type",
            "eshop.Product.ProductRegistered",
        ])
        .expect("parses");
        let filter = Filter::of(&export).expect("valid");
        assert_eq!(
            filter.types,
            [
                "Basket.ItemAdded",
                "Order.OrderPlaced",
                "Product.ProductRegistered"
            ]
        );
        assert!(options(&["--type", "eshop.Order.OrderLost"]).is_err());
        assert!(options(&["--type", "Order.OrderPlaced"]).is_err());
        assert!(options(&["--aggregate-type", "Invoice"]).is_err());
        assert!(options(&["--format", "xml"]).is_err());
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_refused() {
        let export = options(&["--from", "10", "--to", "9"]).expect("parses");
        assert!(matches!(
            Filter::of(&export),
            Err(OptionsError::EmptyRange { .. })
        ));
        let export = options(&[
            "--from",
            "2026-02-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
        ])
        .expect("parses");
        assert!(Filter::of(&export).is_err());
        let export = options(&["--from", "5", "--to", "5"]).expect("parses");
        assert!(Filter::of(&export).is_ok());
    }

    #[test]
    fn the_page_query_numbers_the_conditions_present() {
        let filter = Filter {
            to_position: Some(9),
            aggregate_id: Some("a".into()),
            ..Filter::default()
        };
        let sql = filter.page_sql();
        assert!(sql.contains("events.global_position <= $3"), "{sql}");
        assert!(sql.contains("events.aggregate_id = $4"), "{sql}");
        assert!(sql.ends_with("LIMIT $5"), "{sql}");
        assert!(!sql.contains("$?"), "{sql}");
    }

    #[test]
    fn csv_rows_quote_the_json_data() {
        let envelope: Envelope = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "0193a0b0-0000-7000-8000-000000000001",
            "source": "/eshop/Product", "type": "eshop.Product.ProductRegistered",
            "subject": "p", "time": "2026-01-31T00:00:00Z", "datacontenttype": "application/json",
            "dataschema": "Product/ProductRegistered.v2.json", "aggregatetype": "Product",
            "aggregateid": "p", "aggregatesequence": 1, "globalposition": 7, "schemaversion": "2.0",
            "correlationid": "c", "causationid": "k", "actor": "a",
            "data": {"name": "Mug, \"blue\"\nlarge"}
        }))
        .expect("envelope");
        let mut rows = Rows::new(Vec::new(), Format::Csv);
        rows.header().expect("header");
        rows.write(&envelope).expect("row");
        rows.flush().expect("flush");
        let Rows::Csv(csv) = rows else {
            panic!("csv rows")
        };
        let bytes = (*csv).into_inner().expect("bytes");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let record = reader.records().next().expect("a row").expect("valid csv");
        assert_eq!(&record[0], "7");
        assert_eq!(&record[7], "2026-01-31T00:00:00Z");
        let data: serde_json::Value = serde_json::from_str(&record[14]).expect("json data");
        assert_eq!(data["name"], "Mug, \"blue\"\nlarge");
    }
}
