//! Durations in JSON as people write them in config (`30s`, `1m 30s`,
//! `250ms`); a bare number is seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(d).to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Seconds(f64),
}

fn parse(w: Written) -> Result<Duration, String> {
    match w {
        Written::Text(s) => serin_config::parse_duration(&s),
        Written::Seconds(s) => {
            Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a duration in seconds"))
        }
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(Written::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// The same for `Option<Duration>` (absent or null: `None`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Written>::deserialize(d)? {
            Some(w) => parse(w).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
