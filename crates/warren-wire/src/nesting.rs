//! A guard against field tables nested deep enough to overflow the stack.
//!
//! amq-protocol parses nested field tables and arrays recursively, with no
//! depth limit. A table nests in 5–6 bytes, so a 6 KB frame already holds
//! 1000 levels, which overflows a 2 MiB thread stack (a tokio worker's) and
//! aborts the whole broker. Before a method or content-header payload reaches
//! amq-protocol, [`check_nesting`] walks the field tables it contains with an
//! explicit depth count and rejects anything nested deeper than
//! [`MAX_FIELD_NESTING`].
//!
//! The walk mirrors amq-protocol's grammar (RabbitMQ's type octets). Where it
//! meets something it cannot read (truncation, unknown type octet) it stops
//! and leaves the error to amq-protocol, which stops at the same place: it
//! never recurses past a point this walk did not reach.

use crate::error::WireError;

/// Deepest nesting of field tables/arrays accepted in one field (the
/// top-level table is depth 1). RabbitMQ's own `x-death` header needs 3.
pub const MAX_FIELD_NESTING: usize = 64;

/// What comes before the field table of a method, after the class and
/// method ids.
#[derive(Clone, Copy)]
enum Field {
    /// Fixed-size fields (shorts, octets, packed bits).
    Fixed(usize),
    /// A short string.
    ShortStr,
}

use Field::{Fixed, ShortStr};

/// The fields before the (only) field table of each method that has one.
fn fields_before_table(class_id: u16, method_id: u16) -> Option<&'static [Field]> {
    Some(match (class_id, method_id) {
        (10, 10) => &[Fixed(2)],                                                    // connection.start
        (10, 11) => &[],                                                            // connection.start-ok
        (40, 10) => &[Fixed(2), ShortStr, ShortStr, Fixed(1)],                      // exchange.declare
        (40, 30) | (40, 40) => &[Fixed(2), ShortStr, ShortStr, ShortStr, Fixed(1)], // exchange.(un)bind
        (50, 10) => &[Fixed(2), ShortStr, Fixed(1)],                                // queue.declare
        (50, 20) => &[Fixed(2), ShortStr, ShortStr, ShortStr, Fixed(1)],            // queue.bind
        (50, 50) => &[Fixed(2), ShortStr, ShortStr, ShortStr],                      // queue.unbind (no bits)
        (60, 20) => &[Fixed(2), ShortStr, ShortStr, Fixed(1)],                      // basic.consume
        _ => return None,
    })
}

/// Checks that no field table in a method payload (starting with its class
/// and method ids) nests deeper than [`MAX_FIELD_NESTING`].
///
/// # Errors
/// [`WireError::Malformed`] if one does.
pub(crate) fn check_method_nesting(payload: &[u8]) -> Result<(), WireError> {
    let mut cursor = Cursor(payload);
    let (Some(class_id), Some(method_id)) = (cursor.u16(), cursor.u16()) else {
        return Ok(());
    };
    let Some(fields) = fields_before_table(class_id, method_id) else {
        return Ok(());
    };
    for field in fields {
        let skipped = match field {
            Fixed(n) => cursor.take(*n),
            ShortStr => cursor.short_str(),
        };
        if skipped.is_none() {
            return Ok(());
        }
    }
    check_table_at(&mut cursor)
}

/// Same as [`check_method_nesting`] for a content-header payload, whose
/// `headers` property is the only table.
pub(crate) fn check_header_nesting(payload: &[u8]) -> Result<(), WireError> {
    let mut cursor = Cursor(payload);
    // class id, weight, body size
    let (Some(_), Some(flags)) = (cursor.take(12), cursor.u16()) else {
        return Ok(());
    };
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 && cursor.short_str().is_none() {
            return Ok(());
        }
    }
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    check_table_at(&mut cursor)
}

fn check_table_at(cursor: &mut Cursor<'_>) -> Result<(), WireError> {
    let Some(table) = cursor.long_bytes() else {
        return Ok(());
    };
    match walk_table(table, 1) {
        Err(TooDeep) => Err(WireError::Malformed(format!(
            "field table nested deeper than {MAX_FIELD_NESTING} levels"
        ))),
        Ok(_) => Ok(()),
    }
}

/// The nesting limit was exceeded.
struct TooDeep;

/// Whether the walk could read a value completely (`false`: stop here, the
/// parser will fail at this point too).
type Readable = bool;

/// Walks the entries of a table body at `depth` (1 = top level).
fn walk_table(body: &[u8], depth: usize) -> Result<Readable, TooDeep> {
    if depth > MAX_FIELD_NESTING {
        return Err(TooDeep);
    }
    let mut cursor = Cursor(body);
    while !cursor.0.is_empty() {
        if cursor.short_str().is_none() || !walk_value(&mut cursor, depth)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Walks the values of an array body at `depth`.
fn walk_array(body: &[u8], depth: usize) -> Result<Readable, TooDeep> {
    if depth > MAX_FIELD_NESTING {
        return Err(TooDeep);
    }
    let mut cursor = Cursor(body);
    while !cursor.0.is_empty() {
        if !walk_value(&mut cursor, depth)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Walks one typed value inside a table or array at `depth`.
fn walk_value(cursor: &mut Cursor<'_>, depth: usize) -> Result<Readable, TooDeep> {
    let Some(kind) = cursor.take(1).map(|b| b[0]) else {
        return Ok(false);
    };
    let fixed = match kind {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'L' | b'l' | b'd' | b'T' => 8,
        b'S' | b'x' => return Ok(cursor.long_bytes().is_some()),
        b'F' => return cursor.long_bytes().map_or(Ok(false), |t| walk_table(t, depth + 1)),
        b'A' => return cursor.long_bytes().map_or(Ok(false), |a| walk_array(a, depth + 1)),
        _ => return Ok(false),
    };
    Ok(cursor.take(fixed).is_some())
}

/// Reads from the front of a byte slice; `None` when too short.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn short_str(&mut self) -> Option<&'a [u8]> {
        let len = self.take(1)?[0];
        self.take(usize::from(len))
    }

    fn long_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        self.take(usize::try_from(len).ok()?)
    }
}
