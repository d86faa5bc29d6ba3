//! Job event cursors: one seq per shard joined by '.', e.g. `12.0.7`.

use crate::api::ApiError;

pub fn parse_cursor(s: &str) -> Result<Vec<u64>, ApiError> {
    if s.is_empty() || s == "0" {
        return Ok(Vec::new());
    }
    s.split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad(
                "invalid_cursor",
                format!(
                    "since must be a cursor returned by /v1/events (seqs joined by '.'), got {s:?}"
                ),
            )
        })
}

pub fn cursor_string(c: &[u64]) -> String {
    c.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(parse_cursor("").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_cursor("0").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_cursor("3.0.12").unwrap(), vec![3, 0, 12]);
        assert_eq!(cursor_string(&[3, 0, 12]), "3.0.12");
        assert!(parse_cursor("3..1").is_err());
        assert!(parse_cursor("x").is_err());
    }
}
