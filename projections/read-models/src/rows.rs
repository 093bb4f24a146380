//! What a rebuild writes: each read model's tables, and its rows encoded
//! for `COPY … FROM STDIN` (PostgreSQL's text format).

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// A table a projection owns.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    /// The columns a rebuild writes, in the order of its rows (generated
    /// columns are left out).
    pub columns: &'static [&'static str],
    /// The primary key: how `verify` names a row that differs.
    pub key: &'static [&'static str],
    /// Whether analysts get this table in a point-in-time snapshot (the
    /// others only help the projection work, like the orders that
    /// `sales_daily` keeps to take cancellations off).
    pub in_snapshot: bool,
}

/// A value as COPY's text format spells it.
pub trait CopyValue {
    fn write_to(&self, buf: &mut Vec<u8>);
}

impl CopyValue for i64 {
    fn write_to(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.to_string().as_bytes());
    }
}

impl CopyValue for str {
    fn write_to(&self, buf: &mut Vec<u8>) {
        let special = |b: &u8| matches!(b, b'\\' | b'\n' | b'\r' | b'\t');
        if !self.as_bytes().iter().any(special) {
            buf.extend_from_slice(self.as_bytes());
            return;
        }
        for byte in self.bytes() {
            match byte {
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                other => buf.push(other),
            }
        }
    }
}

impl CopyValue for String {
    fn write_to(&self, buf: &mut Vec<u8>) {
        self.as_str().write_to(buf);
    }
}

impl CopyValue for &str {
    fn write_to(&self, buf: &mut Vec<u8>) {
        (**self).write_to(buf);
    }
}

impl CopyValue for Uuid {
    fn write_to(&self, buf: &mut Vec<u8>) {
        let mut text = Uuid::encode_buffer();
        buf.extend_from_slice(self.hyphenated().encode_lower(&mut text).as_bytes());
    }
}

/// At microsecond precision, truncated, as a bound parameter is stored.
impl CopyValue for DateTime<Utc> {
    fn write_to(&self, buf: &mut Vec<u8>) {
        use chrono::{Datelike, Timelike};
        use std::io::Write;
        let _ = write!(
            buf,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            self.year(),
            self.month(),
            self.day(),
            self.hour(),
            self.minute(),
            self.second(),
            self.timestamp_subsec_micros()
        );
    }
}

impl CopyValue for NaiveDate {
    fn write_to(&self, buf: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(buf, "{}", self.format("%Y-%m-%d"));
    }
}

impl CopyValue for serde_json::Value {
    fn write_to(&self, buf: &mut Vec<u8>) {
        self.to_string().write_to(buf);
    }
}

/// A value for a JSON column, encoded by serde.
pub struct Json<'a, T: ?Sized>(pub &'a T);

impl<T: serde::Serialize + ?Sized> CopyValue for Json<'_, T> {
    fn write_to(&self, buf: &mut Vec<u8>) {
        match serde_json::to_string(self.0) {
            Ok(text) => text.write_to(buf),
            // Rows of plain fields always encode; were one not to, COPY
            // refuses this as it refuses any text that is not JSON.
            Err(_) => buf.extend_from_slice(b"not json"),
        }
    }
}

impl<T: CopyValue> CopyValue for Option<T> {
    fn write_to(&self, buf: &mut Vec<u8>) {
        match self {
            Some(value) => value.write_to(buf),
            None => buf.extend_from_slice(b"\\N"),
        }
    }
}

/// Rows for each of a projection's tables (in the order of
/// [`Projection::tables`](crate::Projection::tables)), as COPY
/// text.
#[derive(Debug, Default)]
pub struct Rows {
    tables: Vec<Vec<u8>>,
    counts: Vec<u64>,
}

impl Rows {
    #[must_use]
    pub fn new(tables: usize) -> Self {
        Self {
            tables: vec![Vec::new(); tables],
            counts: vec![0; tables],
        }
    }

    /// Adds a row to table number `table`.
    pub fn row(&mut self, table: usize, values: &[&dyn CopyValue]) {
        let buf = &mut self.tables[table];
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            value.write_to(buf);
        }
        buf.push(b'\n');
        self.counts[table] += 1;
    }

    /// The encoded rows of a table so far.
    #[must_use]
    pub fn pending(&self, table: usize) -> usize {
        self.tables[table].len()
    }

    /// Takes the rows of a table encoded so far, and how many they are.
    pub fn take(&mut self, table: usize) -> (Vec<u8>, u64) {
        let rows = std::mem::take(&mut self.counts[table]);
        (std::mem::take(&mut self.tables[table]), rows)
    }
}

/// A timestamp as PostgreSQL writes it in JSON (`to_jsonb(timestamptz)`
/// in a UTC session): microseconds without trailing zeros, `+00:00`.
#[must_use]
pub fn pg_json_time(at: DateTime<Utc>) -> String {
    let micros = at.timestamp_subsec_micros();
    let mut text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    if micros > 0 {
        let fraction = format!("{micros:06}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push_str("+00:00");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_copy() {
        let mut rows = Rows::new(1);
        rows.row(0, &[&"a\tb\\c\nd", &None::<String>, &42_i64]);
        assert_eq!(rows.take(0), (b"a\\tb\\\\c\\nd\t\\N\t42\n".to_vec(), 1));
    }

    #[test]
    fn timestamps_are_written_to_the_microsecond() {
        let at = "2026-01-02T03:04:05.123456789Z"
            .parse::<DateTime<Utc>>()
            .expect("a time");
        let mut buf = Vec::new();
        at.write_to(&mut buf);
        assert_eq!(buf, b"2026-01-02 03:04:05.123456+00");
    }

    #[test]
    fn json_times_match_postgres() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("a time");
        assert_eq!(
            pg_json_time(at("2026-11-23T21:54:28.123400789Z")),
            "2026-11-23T21:54:28.1234+00:00"
        );
        assert_eq!(
            pg_json_time(at("2026-11-23T21:54:28Z")),
            "2026-11-23T21:54:28+00:00"
        );
    }
}
