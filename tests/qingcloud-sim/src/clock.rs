//! The simulator's notion of time: real, or moved by hand so tests of the job state machine
//! never sleep. Wall-clock timestamps in responses are the start time plus simulated time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// Simulated time since start, plus the wall-clock start for timestamps. Simulated time
/// starts at `origin` rather than zero when the account has a past (a seeded job history):
/// instants before `origin` are before the simulator started.
#[derive(Debug)]
pub(crate) struct Clock {
    start_wall: Timestamp,
    origin: Duration,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Real(Instant),
    Manual(Mutex<Duration>),
}

impl Clock {
    #[cfg(test)]
    pub(crate) fn new(manual: bool) -> Self {
        Self::with_past(manual, Duration::ZERO)
    }

    /// A clock whose simulated time starts at `past`, so `0..past` lies before the start.
    pub(crate) fn with_past(manual: bool, past: Duration) -> Self {
        Self {
            start_wall: Timestamp::now(),
            origin: past,
            source: if manual {
                Source::Manual(Mutex::new(Duration::ZERO))
            } else {
                Source::Real(Instant::now())
            },
        }
    }

    pub(crate) fn is_manual(&self) -> bool {
        matches!(self.source, Source::Manual(_))
    }

    /// Simulated time since start.
    pub(crate) fn now(&self) -> Duration {
        self.origin
            + match &self.source {
                Source::Real(start) => start.elapsed(),
                Source::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
            }
    }

    /// Moves a manual clock forward; returns false for a real clock.
    pub(crate) fn advance(&self, by: Duration) -> bool {
        match &self.source {
            Source::Real(_) => false,
            Source::Manual(t) => {
                *t.lock().unwrap_or_else(|p| p.into_inner()) += by;
                true
            }
        }
    }

    /// `YYYY-MM-DDThh:mm:ssZ` of a simulated instant.
    pub(crate) fn stamp(&self, at: Duration) -> String {
        let t = if at >= self.origin {
            self.start_wall.checked_add(at - self.origin)
        } else {
            self.start_wall.checked_sub(self.origin - at)
        };
        format_time(t.unwrap_or(self.start_wall))
    }
}

/// The API's timestamp format (UTC, whole seconds).
pub(crate) fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses the API's timestamp format strictly (`YYYY-MM-DDThh:mm:ssZ`).
pub(crate) fn parse_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_api_format() {
        let t = parse_time("2024-05-01T08:09:10Z").unwrap();
        assert_eq!(format_time(t), "2024-05-01T08:09:10Z");
        for bad in [
            "2024-05-01 08:09:10Z",
            "2024-05-01T08:09:10",
            "2024-05-01T08:09:10+00:00",
            "2024-13-01T08:09:10Z",
            "",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::new(true);
        assert_eq!(c.now(), Duration::ZERO);
        assert!(c.advance(Duration::from_secs(3)));
        assert_eq!(c.now(), Duration::from_secs(3));
        assert!(!Clock::new(false).advance(Duration::from_secs(1)));
    }

    #[test]
    fn a_past_lies_before_the_start() {
        let c = Clock::with_past(true, Duration::from_secs(3600));
        assert_eq!(c.now(), Duration::from_secs(3600));
        let start = parse_time(&c.stamp(c.now())).unwrap();
        let before = parse_time(&c.stamp(Duration::ZERO)).unwrap();
        assert_eq!(start.duration_since(before).as_secs(), 3600);
    }
}
