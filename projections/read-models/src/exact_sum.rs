//! Sums for the rebuild folds that are never wrapped or saturated.

use crate::rows::CopyValue;

/// A sum of figures bound for a `bigint` column, kept exactly while a
/// rebuild folds a history (in 128 bits, which no realistic history
/// exceeds; if one did, the sum is known to be out of range).
///
/// It is written as it is: PostgreSQL refuses a sum beyond `bigint` when
/// the rebuild's COPY loads it (`value "…" is out of range for type
/// bigint`), so the rebuild or verify fails before anything is swapped in,
/// as the live projection, whose sums PostgreSQL checks too, dead-letters
/// the event that would overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactSum(Option<i128>);

impl Default for ExactSum {
    fn default() -> Self {
        Self(Some(0))
    }
}

impl ExactSum {
    /// Adds a term.
    pub fn add(&mut self, term: i128) {
        self.0 = self.0.and_then(|sum| sum.checked_add(term));
    }

    /// Adds `a × b` (exact: the product of two 64-bit figures fits in 128
    /// bits).
    pub fn add_product(&mut self, a: i64, b: i64) {
        self.add(i128::from(a) * i128::from(b));
    }

    /// Marks the sum out of range whatever is added later.
    pub fn overflow(&mut self) {
        self.0 = None;
    }

    /// The sum, when it fits a `bigint`.
    pub fn value(self) -> Option<i64> {
        self.0.and_then(|sum| i64::try_from(sum).ok())
    }
}

impl CopyValue for ExactSum {
    fn write_to(&self, buf: &mut Vec<u8>) {
        match self.0 {
            Some(sum) => buf.extend_from_slice(sum.to_string().as_bytes()),
            // Not a number: COPY refuses it as it refuses one out of range.
            None => buf.extend_from_slice(b"out of range"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(sum: ExactSum) -> String {
        let mut buf = Vec::new();
        sum.write_to(&mut buf);
        String::from_utf8(buf).expect("ASCII")
    }

    #[test]
    fn a_sum_beyond_a_bigint_is_written_exactly_not_wrapped() {
        let mut sum = ExactSum::default();
        sum.add_product(1 << 62, 1);
        sum.add_product(1 << 62, 1);
        assert_eq!(sum.value(), None);
        assert_eq!(written(sum), "9223372036854775808");
    }

    #[test]
    fn a_product_beyond_a_bigint_is_exact() {
        let mut sum = ExactSum::default();
        sum.add_product(i64::MAX, 2);
        assert_eq!(written(sum), "18446744073709551614");
        sum.add_product(i64::MAX, -2);
        assert_eq!(sum.value(), Some(0));
    }

    #[test]
    fn a_sum_beyond_128_bits_stays_out_of_range() {
        let mut sum = ExactSum::default();
        sum.add(i128::MAX);
        sum.add(1);
        sum.add(-1);
        assert_eq!(sum.value(), None);
        assert_eq!(written(sum), "out of range");
    }
}
