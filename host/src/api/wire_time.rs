//! Wire times `yyyy-MM-dd HH:mm:ss`, wall time of the configured zone.

use chrono::{NaiveDateTime, TimeZone};

use super::error::ApiError;

/// Parses `text` of `field` as wall time in `zone` into ms since the epoch.
pub fn parse_wire_time(field: &str, text: &str, zone: chrono_tz::Tz) -> Result<i64, ApiError> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| ApiError::invalid(field, format!("`{text}` is not a time like 2024-04-09 10:30:30")))?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|time| time.timestamp_millis())
        .ok_or_else(|| ApiError::invalid(field, format!("`{text}` does not exist in {zone}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_wall_time() {
        // 2024-04-09 10:30:30 +08:00 = 02:30:30 UTC.
        assert_eq!(parse_wire_time("t", "2024-04-09 10:30:30", chrono_tz::Asia::Shanghai).unwrap(), 1_712_629_830_000);
        for bad in ["2024-04-09T10:30:30", "2024-13-01 00:00:00", "", "2024-04-09 10:30"] {
            let err = parse_wire_time("transactionTime", bad, chrono_tz::Asia::Shanghai).unwrap_err();
            assert!(err.msg.contains("transactionTime"), "{bad}");
        }
    }
}
