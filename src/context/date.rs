//! Observation dates in the forms real exports write them: ISO `2021-04-25` (iNaturalist, GBIF)
//! and `25-04-2021` (Observation.org's Dutch exports), each with or without a time after it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A calendar date, checked: month 1-12, a day that month has. Written as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl From<Date> for String {
    fn from(date: Date) -> String {
        date.to_string()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(text: String) -> Result<Date, String> {
        Date::parse(&text)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The forms accepted, for messages.
pub const FORMS: &str = "YYYY-MM-DD or DD-MM-YYYY (or with /), optionally followed by a time";

impl Date {
    /// Checks the parts; the message says which one is impossible.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date, String> {
        if !(1000..=9999).contains(&year) {
            return Err(format!("year {year} is not a four-digit year"));
        }
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} does not exist"));
        }
        let last = days_in_month(year, month);
        if !(1..=last).contains(&day) {
            return Err(format!(
                "day {day} does not exist in month {month} of {year} (it has {last} days)"
            ));
        }
        Ok(Date { year, month, day })
    }

    /// The UTC date `seconds` after the Unix epoch (Howard Hinnant's days-to-civil
    /// arithmetic), for dates vlinder itself recorded.
    pub fn from_unix_seconds(seconds: i64) -> Result<Date, String> {
        let z = seconds.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Date::new(
            i32::try_from(year).map_err(|_| format!("year {year} is out of range"))?,
            month as u32,
            day as u32,
        )
    }

    /// Parses `text`: the date, then optionally `T` or spaces and a time (`10:30`, `10:30:00Z`,
    /// `10:30:00+02:00`), which is checked for its shape and otherwise ignored.
    pub fn parse(text: &str) -> Result<Date, String> {
        let text = text.trim();
        let bad = |why: &str| format!("{text:?} is not a date ({why}); write it as {FORMS}");
        let (date, time) = match text.find(['T', ' ']) {
            Some(i) => (&text[..i], Some(text[i + 1..].trim())),
            None => (text, None),
        };
        if let Some(time) = time {
            let bytes = time.as_bytes();
            let clock = |n: usize| bytes.get(n).is_some_and(u8::is_ascii_digit);
            let shaped = (clock(0) && clock(1) && bytes.get(2) == Some(&b':') && clock(3))
                || (clock(0) && bytes.get(1) == Some(&b':') && clock(2));
            if !shaped {
                return Err(bad("what follows the date is not a time"));
            }
        }
        let separator = if date.contains('-') { '-' } else { '/' };
        let parts: Vec<&str> = date.split(separator).collect();
        let [a, b, c] = parts[..] else {
            return Err(bad("it needs a year, a month and a day"));
        };
        let number = |s: &str| -> Result<u32, String> {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{s:?} is not a number")));
            }
            Ok(s.parse().expect("at most four digits"))
        };
        let (year, month, day) = if a.len() == 4 {
            (number(a)?, number(b)?, number(c)?)
        } else if c.len() == 4 {
            (number(c)?, number(b)?, number(a)?)
        } else {
            return Err(bad("no four-digit year at its start or end"));
        };
        Date::new(year as i32, month, day).map_err(|why| bad(&why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_become_the_utc_date() {
        let date = |s: i64| Date::from_unix_seconds(s).unwrap().to_string();
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_688_000 - 1), "2026-12-07");
        assert_eq!(date(1_796_688_000), "2026-12-08");
    }

    #[test]
    fn the_forms_of_real_exports_parse_to_the_same_date() {
        let d = Date::new(2021, 4, 25).unwrap();
        for text in [
            "2021-04-25",
            " 2021-04-25 ",
            "25-04-2021",
            "25/04/2021",
            "2021/4/25",
            "2021-04-25T10:12:00Z",
            "2021-04-25T10:12:00+01:00",
            "2021-04-25 10:12",
            "25-04-2021 9:05",
        ] {
            assert_eq!(Date::parse(text), Ok(d), "{text}");
        }
        assert_eq!(Date::parse("2020-02-29").unwrap().to_string(), "2020-02-29");
        assert_eq!(d.to_string(), "2021-04-25");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2021-04-25\"");
        assert_eq!(serde_json::from_str::<Date>("\"2021-04-25\"").unwrap(), d);
        assert!(serde_json::from_str::<Date>("\"2021-02-30\"").is_err());
    }

    #[test]
    fn impossible_and_unparseable_dates_are_refused_with_the_reason() {
        for (text, why) in [
            ("2021-13-01", "month 13 does not exist"),
            ("2021-04-31", "day 31 does not exist in month 4"),
            ("2021-02-29", "it has 28 days"),
            ("1900-02-29", "it has 28 days"),
            ("31-04-2021", "day 31"),
            ("2021-00-10", "month 0"),
            ("yesterday", "needs a year"),
            ("04-25-21", "four-digit year"),
            ("2021-04-25 noon", "not a time"),
            ("2021-04-xx", "\"xx\" is not a number"),
            ("", "needs a year"),
        ] {
            let error = Date::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains("YYYY-MM-DD"), "{error}");
        }
    }
}
