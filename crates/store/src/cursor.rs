//! Opaque pagination cursors.
//!
//! A cursor is the sort key of the last item of a page, hex-encoded so that clients treat
//! it as a token rather than something to build by hand. Every backend uses these two
//! functions, so a cursor from one page of a list works on any API process.

use crate::Error;

/// Encodes sort-key parts into a cursor.
pub fn encode_cursor(parts: &[&str]) -> String {
    let joined = parts.join("\u{1f}");
    joined
        .bytes()
        .fold(String::with_capacity(joined.len() * 2), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Decodes a cursor into its `n` sort-key parts.
pub fn decode_cursor(cursor: &str, n: usize) -> Result<Vec<String>, Error> {
    let invalid = || Error::Invalid(format!("`{cursor}` is not a cursor returned by this list"));
    if !cursor.len().is_multiple_of(2) || cursor.len() > 1024 {
        return Err(invalid());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    if parts.len() == n {
        Ok(parts)
    } else {
        Err(invalid())
    }
}

/// The cursor of a list ordered by id.
pub fn encode_id_cursor(id: uuid::Uuid) -> String {
    encode_cursor(&[&id.to_string()])
}

/// The id in a cursor made by [`encode_id_cursor`], if the page request has one.
pub fn decode_id_cursor(cursor: Option<&str>) -> Result<Option<uuid::Uuid>, Error> {
    cursor
        .map(|c| {
            let parts = decode_cursor(c, 1)?;
            uuid::Uuid::parse_str(&parts[0])
                .map_err(|_| Error::Invalid(format!("`{c}` is not a cursor returned by this list")))
        })
        .transpose()
}

/// A page from a query that fetched `limit + 1` rows: the extra row, if any, only says
/// that a next page exists.
pub fn page_from_overfetch<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> crate::Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    crate::Page { items, next_cursor }
}

/// A cursor for lists ordered by (timestamp, id): the timestamp in microseconds.
pub fn encode_time_id_cursor(at: tollgate_model::records::Timestamp, id: uuid::Uuid) -> String {
    encode_cursor(&[&at.timestamp_micros().to_string(), &id.to_string()])
}

/// The (microseconds, id) in a cursor made by [`encode_time_id_cursor`], if the page
/// request has one; `Invalid` for anything else.
pub fn decode_time_id_cursor(cursor: Option<&str>) -> Result<Option<(i64, uuid::Uuid)>, Error> {
    cursor
        .map(|c| {
            let parts = decode_cursor(c, 2)?;
            let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
            let micros: i64 = parts[0].parse().map_err(|_| bad())?;
            let id = uuid::Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
            Ok((micros, id))
        })
        .transpose()
}

/// A cursor for lists in due order, (due time or none, id).
pub fn encode_due_cursor(
    due: Option<tollgate_model::records::Timestamp>,
    id: uuid::Uuid,
) -> String {
    let due = due.map_or_else(|| "none".to_owned(), |d| d.timestamp_micros().to_string());
    encode_cursor(&[&due, &id.to_string()])
}

/// The (due time, id) in a cursor made by [`encode_due_cursor`], if the page request
/// has one; `Invalid` for anything else.
#[allow(clippy::type_complexity)]
pub fn decode_due_cursor(
    cursor: Option<&str>,
) -> Result<Option<(Option<tollgate_model::records::Timestamp>, uuid::Uuid)>, Error> {
    cursor
        .map(|c| {
            let parts = decode_cursor(c, 2)?;
            let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
            let due = match parts[0].as_str() {
                "none" => None,
                micros => Some(
                    chrono::DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
                        .ok_or_else(bad)?,
                ),
            };
            let id = uuid::Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
            Ok((due, id))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c = encode_cursor(&["2026-01-01T00:00:00Z", "0191"]);
        assert_eq!(
            decode_cursor(&c, 2).unwrap(),
            ["2026-01-01T00:00:00Z", "0191"]
        );
        assert!(decode_cursor(&c, 1).is_err());
        for bad in ["z", "zz", "abc", "ff"] {
            assert!(decode_cursor(bad, 2).is_err(), "{bad}");
        }
    }
}
