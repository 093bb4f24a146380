use std::collections::BTreeMap;
use std::str::FromStr;

/// How often each aggregate type is snapshotted: every `n` events, or never
/// when `n` is 0 or the type is not listed.
///
/// Parsed from `Product=50,Basket=50,Order=0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: BTreeMap<String, usize>,
}

impl SnapshotPolicy {
    #[must_use]
    pub fn every(&self, aggregate_type: &str) -> usize {
        self.every.get(aggregate_type).copied().unwrap_or(0)
    }

    #[must_use]
    pub fn with(mut self, aggregate_type: &str, every: usize) -> Self {
        self.every.insert(aggregate_type.to_owned(), every);
        self
    }

    /// Whether the events from `old_version + 1` to `new_version` cross a
    /// snapshot boundary.
    #[must_use]
    pub fn due(&self, aggregate_type: &str, old_version: usize, new_version: usize) -> bool {
        match self.every(aggregate_type) {
            0 => false,
            n => new_version / n > old_version / n,
        }
    }
}

impl FromStr for SnapshotPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut policy = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, every) = part
                .split_once('=')
                .ok_or_else(|| format!("expected AggregateType=N, got '{part}'"))?;
            let every = every
                .trim()
                .parse()
                .map_err(|_| format!("'{every}' is not a whole number of events"))?;
            policy.every.insert(name.trim().to_owned(), every);
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_of_types() {
        let policy: SnapshotPolicy = "Product=50, Basket=20,Order=0".parse().expect("valid");
        assert_eq!(policy.every("Product"), 50);
        assert_eq!(policy.every("Order"), 0);
        assert_eq!(policy.every("Unknown"), 0);
    }

    #[test]
    fn a_snapshot_is_due_when_a_boundary_is_crossed() {
        let policy = SnapshotPolicy::default().with("Basket", 10);
        assert!(policy.due("Basket", 9, 10));
        assert!(policy.due("Basket", 8, 12));
        assert!(!policy.due("Basket", 10, 19));
        assert!(!policy.due("Order", 0, 100));
    }

    #[test]
    fn refuses_malformed_entries() {
        assert!("Product".parse::<SnapshotPolicy>().is_err());
        assert!("Product=x".parse::<SnapshotPolicy>().is_err());
    }
}
