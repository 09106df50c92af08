//! The RequestHeaderModifier and ResponseHeaderModifier filters: set, add
//! and remove headers, in that order (Gateway API).

use http::HeaderMap;
use serin_config::proxy::HeaderModifierConfig;

pub fn modify_headers(headers: &mut HeaderMap, m: &HeaderModifierConfig) {
    for (name, value) in &m.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &m.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &m.remove {
        headers.remove(name);
    }
}
