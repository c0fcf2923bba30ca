//! Daily cutoff schedules in a named time zone ("17:00 America/Mexico_City"). Daylight-saving
//! gaps and folds resolve the way `jiff` calls *compatible* (RFC 5545): a wall time that does
//! not exist moves forward by the gap; one that occurs twice means its first occurrence.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::SettlementError;

/// A daily cutoff: a wall-clock time in a time zone.
#[derive(Debug, Clone)]
pub struct Cutoff {
    time: Time,
    zone: TimeZone,
    zone_name: String,
}

impl Cutoff {
    /// `time` as `HH:MM`, `zone` an IANA name such as `America/Mexico_City` (the tz database
    /// is bundled, so it does not depend on the host's).
    pub fn parse(time: &str, zone: &str) -> Result<Cutoff, SettlementError> {
        let (h, m) = time
            .split_once(':')
            .ok_or_else(|| SettlementError::Schedule(format!("cutoff {time:?} is not HH:MM")))?;
        let hour: i8 = h.parse().map_err(|_| SettlementError::Schedule(format!("bad hour in {time:?}")))?;
        let minute: i8 =
            m.parse().map_err(|_| SettlementError::Schedule(format!("bad minute in {time:?}")))?;
        let time =
            Time::new(hour, minute, 0, 0).map_err(|e| SettlementError::Schedule(format!("{time:?}: {e}")))?;
        let tz =
            TimeZone::get(zone).map_err(|e| SettlementError::Schedule(format!("time zone {zone:?}: {e}")))?;
        Ok(Cutoff { time, zone: tz, zone_name: zone.to_owned() })
    }

    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first cutoff strictly after `now_ns` (nanoseconds since the epoch).
    pub fn next_after(&self, now_ns: u64) -> Result<u64, SettlementError> {
        let now = Timestamp::from_nanosecond(i128::from(now_ns))
            .map_err(|e| SettlementError::Schedule(e.to_string()))?;
        let local = now.to_zoned(self.zone.clone());
        let mut date = local.date();
        for _ in 0..3 {
            let at = date
                .to_datetime(self.time)
                .to_zoned(self.zone.clone())
                .map_err(|e| SettlementError::Schedule(e.to_string()))?;
            if at.timestamp() > now {
                return u64::try_from(at.timestamp().as_nanosecond())
                    .map_err(|_| SettlementError::Schedule("cutoff before 1970".into()));
            }
            date = date.checked_add(1.day()).map_err(|e| SettlementError::Schedule(e.to_string()))?;
        }
        Err(SettlementError::Schedule("no cutoff within two days".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_nanosecond() as u64
    }

    #[test]
    fn five_pm_in_mexico_city() {
        let cutoff = Cutoff::parse("17:00", "America/Mexico_City").unwrap();
        // Mexico City has no DST since 2022: UTC−6 all year.
        assert_eq!(cutoff.next_after(ns("2026-11-25T12:00:00Z")).unwrap(), ns("2026-11-25T23:00:00Z"));
        assert_eq!(cutoff.next_after(ns("2026-11-25T23:00:00Z")).unwrap(), ns("2026-11-26T23:00:00Z"));
        assert_eq!(cutoff.next_after(ns("2026-11-26T05:59:00Z")).unwrap(), ns("2026-11-26T23:00:00Z"));
    }

    #[test]
    fn new_york_follows_daylight_saving() {
        let cutoff = Cutoff::parse("17:00", "America/New_York").unwrap();
        assert_eq!(cutoff.next_after(ns("2026-07-01T12:00:00Z")).unwrap(), ns("2026-07-01T21:00:00Z"));
        assert_eq!(cutoff.next_after(ns("2026-12-01T12:00:00Z")).unwrap(), ns("2026-12-01T22:00:00Z"));
        // 02:30 does not exist on 2026-03-08 in New York: it moves forward to 03:30 EDT.
        let gap = Cutoff::parse("02:30", "America/New_York").unwrap();
        assert_eq!(gap.next_after(ns("2026-03-08T05:00:00Z")).unwrap(), ns("2026-03-08T07:30:00Z"));
    }

    #[test]
    fn bad_input() {
        assert!(Cutoff::parse("25:00", "UTC").is_err());
        assert!(Cutoff::parse("1700", "UTC").is_err());
        assert!(Cutoff::parse("17:00", "Mars/Olympus").is_err());
    }
}
