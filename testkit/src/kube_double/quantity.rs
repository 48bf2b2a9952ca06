//! Kubernetes' resource quantities (pure): `500m` cores, `512Mi` bytes, `1` GPU.

/// A quantity as a number of its base unit (cores, bytes, devices); `None` when it is not
/// Kubernetes' syntax.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    if let Some(number) = text.strip_suffix('E') {
        return number.parse::<f64>().ok().map(|n| n * 1e18);
    }
    text.parse::<f64>().ok()
}

/// A quantity from JSON (a string, or a bare number as some clients send).
pub fn of(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::String(text) => parse(text),
        serde_json::Value::Number(number) => number.as_f64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_their_base_unit() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("1"), Some(1.0));
        assert_eq!(parse("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("2G"), Some(2e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("lots"), None);
    }
}
