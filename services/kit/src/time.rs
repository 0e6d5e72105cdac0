//! Time as the suite stores and sends it: UTC, microseconds since the epoch in the database,
//! `google.protobuf.Timestamp` on the wire; and a [`Clock`] that tests can drive by hand, so
//! nothing waits on the wall clock to see a deadline pass.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, TimeZone, Utc};

/// Microseconds since 1970-01-01T00:00:00Z: how every timestamp is stored.
pub type Micros = i64;

/// A source of the current time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told to; shared by clones.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start.timestamp_micros())))
    }

    /// The current time in microseconds.
    pub fn now_micros(&self) -> Micros {
        match self {
            Clock::System => Utc::now().timestamp_micros(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        from_micros(self.now_micros())
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: chrono::Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.num_microseconds().unwrap_or(i64::MAX), Ordering::SeqCst);
        }
    }

    /// Sets a manual clock; does nothing to the system clock.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Clock::Manual(t) = self {
            t.store(to.timestamp_micros(), Ordering::SeqCst);
        }
    }
}

/// Microseconds to a UTC time (saturating at the representable range).
pub fn from_micros(micros: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Microseconds to a protobuf timestamp.
pub fn to_timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A protobuf timestamp to microseconds; `None` when it is out of range or malformed
/// (nanos outside 0..1e9, or before year 1 / after year 9999 as AIP-142 allows).
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<Micros> {
    const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..1_000_000_000).contains(&ts.nanos) || !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds)
    {
        return None;
    }
    Some(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_negative() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            assert_eq!(from_timestamp(&to_timestamp(micros)), Some(micros));
        }
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&bad), None);
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&far), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = Clock::manual(from_micros(1_000_000));
        let other = clock.clone();
        other.advance(chrono::Duration::seconds(2));
        assert_eq!(clock.now_micros(), 3_000_000);
    }
}
