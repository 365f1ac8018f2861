//! Content hashes of tables: the same rows give the same hash, whatever their physical order.
//!
//! Canonical encoding (version 1): the ASCII tag `barecount-content-v1`; the column count and
//! each column's name and type; the row count; then every row's encoding, rows sorted by their
//! encodings bytewise. A row is encoded cell by cell: `0x00` for NULL, or `0x01`, an 8-byte
//! big-endian length and the UTF-8 bytes of the value's Postgres text output. Lengths are
//! 8-byte big-endian. The hash is lower-case hex SHA-256.

use sha2::{Digest, Sha256};

/// Accumulates rows, then hashes them in canonical order.
#[derive(Debug, Clone)]
pub struct ContentHasher {
    header: Vec<u8>,
    width: usize,
    rows: Vec<Vec<u8>>,
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    buf.extend_from_slice(bytes);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("row has {found} cells, the table has {expected} columns")]
pub struct WidthMismatch {
    pub expected: usize,
    pub found: usize,
}

impl ContentHasher {
    /// `columns` are (name, type) pairs in table order.
    pub fn new<S: AsRef<str>>(columns: &[(S, S)]) -> Self {
        let mut header = Vec::new();
        header.extend_from_slice(b"barecount-content-v1");
        header.extend_from_slice(&(columns.len() as u64).to_be_bytes());
        for (name, ty) in columns {
            put(&mut header, name.as_ref().as_bytes());
            put(&mut header, ty.as_ref().as_bytes());
        }
        ContentHasher {
            header,
            width: columns.len(),
            rows: Vec::new(),
        }
    }

    /// Adds one row of text cells (`None` for NULL).
    pub fn add_row<S: AsRef<str>>(&mut self, cells: &[Option<S>]) -> Result<(), WidthMismatch> {
        if cells.len() != self.width {
            return Err(WidthMismatch {
                expected: self.width,
                found: cells.len(),
            });
        }
        let mut row = Vec::new();
        for cell in cells {
            match cell {
                None => row.push(0),
                Some(text) => {
                    row.push(1);
                    put(&mut row, text.as_ref().as_bytes());
                }
            }
        }
        self.rows.push(row);
        Ok(())
    }

    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Sorts the rows and returns the hex hash.
    pub fn finish(mut self) -> String {
        self.rows.sort_unstable();
        let mut h = Sha256::new();
        h.update(&self.header);
        h.update((self.rows.len() as u64).to_be_bytes());
        for row in &self.rows {
            h.update(row);
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<(&'static str, &'static str)> {
        vec![("region", "text"), ("amount", "numeric")]
    }

    #[test]
    fn order_does_not_matter_content_does() {
        let mut a = ContentHasher::new(&cols());
        a.add_row(&[Some("east"), Some("1.50")]).unwrap();
        a.add_row(&[Some("west"), None]).unwrap();
        let mut b = ContentHasher::new(&cols());
        b.add_row(&[Some("west"), None]).unwrap();
        b.add_row(&[Some("east"), Some("1.50")]).unwrap();
        assert_eq!(a.clone().finish(), b.finish());

        let mut c = ContentHasher::new(&cols());
        c.add_row(&[Some("east"), Some("1.5")]).unwrap();
        c.add_row(&[Some("west"), None]).unwrap();
        assert_ne!(a.clone().finish(), c.finish());

        let mut d = ContentHasher::new(&cols());
        d.add_row(&[Some("east"), Some("1.50")]).unwrap();
        d.add_row(&[Some("west"), Some("")]).unwrap();
        assert_ne!(a.finish(), d.finish(), "NULL and empty string differ");
    }

    #[test]
    fn schema_is_part_of_the_hash() {
        let a = ContentHasher::new(&cols()).finish();
        let b = ContentHasher::new(&[("region", "text"), ("amount", "float8")]).finish();
        assert_ne!(a, b);
    }

    #[test]
    fn width_is_checked() {
        let mut a = ContentHasher::new(&cols());
        assert_eq!(
            a.add_row(&[Some("x")]),
            Err(WidthMismatch {
                expected: 2,
                found: 1
            })
        );
    }
}
