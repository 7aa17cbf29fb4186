//! When and where a butterfly was seen, and what that says about its species: a flight-season
//! and latitude prior learned from observation records, combined with the photo's calibrated
//! probabilities.
//!
//! [`date`] reads the dates real exports write, [`observations`] maps training photos to their
//! observations, [`prior`] learns the prior, fits its weight and judges a record's context.

pub mod date;
pub mod observations;
pub mod prior;

use serde::{Deserialize, Serialize};

pub use date::Date;
pub use observations::Observations;
pub use prior::{Adjusted, Flag, Labelled, Prior, PriorFit, in_context};

/// The date and place of one observation; either may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

impl Context {
    /// True when there is nothing to go on.
    pub fn is_empty(&self) -> bool {
        self.date.is_none() && self.latitude.is_none()
    }

    /// Reads a record's date and coordinates as given (empty text: not given). What cannot be
    /// used is left out and said in a warning, so that the record is still judged by its photo.
    pub fn parse(date: &str, latitude: &str, longitude: &str) -> (Context, Vec<String>) {
        let mut warnings = Vec::new();
        let date = match date.trim() {
            "" => None,
            text => Date::parse(text)
                .map_err(|why| warnings.push(format!("date ignored: {why}")))
                .ok(),
        };
        let (latitude, longitude) = match coordinates(latitude.trim(), longitude.trim()) {
            Ok(place) => place.unzip(),
            Err(why) => {
                warnings.push(format!("place ignored: {why}"));
                (None, None)
            }
        };
        (
            Context {
                date,
                latitude,
                longitude,
            },
            warnings,
        )
    }
}

/// Checked coordinates in decimal degrees, or none when both are empty.
fn coordinates(latitude: &str, longitude: &str) -> Result<Option<(f64, f64)>, String> {
    if latitude.is_empty() && longitude.is_empty() {
        return Ok(None);
    }
    let number = |text: &str, what: &str| -> Result<f64, String> {
        if text.is_empty() {
            return Err(format!(
                "the {what} is missing; give latitude and longitude both"
            ));
        }
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{what} {text:?} is not a number in decimal degrees"))
    };
    let (lat, lon) = (
        number(latitude, "latitude")?,
        number(longitude, "longitude")?,
    );
    if !(-90.0..=90.0).contains(&lat) {
        let swapped = (-90.0..=90.0).contains(&lon) && (-180.0..=180.0).contains(&lat);
        return Err(format!(
            "latitude {lat} is outside -90..90{}",
            if swapped {
                "; are latitude and longitude swapped?"
            } else {
                ""
            }
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is outside -180..180"));
    }
    Ok(Some((lat, lon)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_what_is_usable_and_says_what_is_not() {
        let (c, w) = Context::parse("2021-04-25", "51.85", "-2.19");
        assert_eq!(c.date, Some(Date::new(2021, 4, 25).unwrap()));
        assert_eq!((c.latitude, c.longitude), (Some(51.85), Some(-2.19)));
        assert!(w.is_empty());
        assert_eq!(Context::parse("", "", ""), (Context::default(), vec![]));
        assert!(Context::parse(" ", "", "").0.is_empty());

        let (c, w) = Context::parse("2021-04-31", "51.85", "-2.19");
        assert_eq!(c.date, None);
        assert_eq!(c.latitude, Some(51.85), "the place survives a bad date");
        assert!(
            w[0].contains("date ignored") && w[0].contains("day 31"),
            "{w:?}"
        );

        let (c, w) = Context::parse("2021-04-25", "-2.19", "251.85");
        assert!(c.latitude.is_none() && c.longitude.is_none() && c.date.is_some());
        assert!(w[0].contains("longitude 251.85 is outside"), "{w:?}");
        let (_, w) = Context::parse("", "151.85", "-2.19");
        assert!(w[0].contains("swapped"), "{w:?}");
        let (_, w) = Context::parse("", "51.8", "");
        assert!(w[0].contains("longitude is missing"), "{w:?}");
        let (_, w) = Context::parse("", "north", "2");
        assert!(w[0].contains("\"north\" is not a number"), "{w:?}");
        let (_, w) = Context::parse("", "NaN", "2");
        assert!(w[0].contains("not a number"), "{w:?}");
    }
}
