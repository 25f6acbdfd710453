//! Input files as UTF-8 text: a UTF-8 byte order mark is skipped, and a file
//! that starts with a UTF-16 byte order mark (Excel's "Unicode text") is
//! transcoded to UTF-8 on the fly; plus the delimiter of a CSV header.
//!
//! It owns encodings only, so the CSV and JSONL readers always see UTF-8 and
//! count lines the same way whatever the file's encoding. It streams (one
//! buffer at a time) and must not judge content: a lone surrogate becomes
//! U+FFFD and the row that holds it is the validator's business.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// A file's bytes as UTF-8.
pub(super) type TextReader = BufReader<Source>;

/// The running sha256 of the raw bytes read from a file, shared with the
/// pass that reads it (the input's fingerprint, taken as it streams).
pub(super) type Digest = std::sync::Arc<std::sync::Mutex<sha2::Sha256>>;

/// A file whose bytes also feed a [`Digest`].
pub(super) struct Hashed {
    file: File,
    digest: Option<Digest>,
}

impl Read for Hashed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(d) = &self.digest {
            sha2::Digest::update(&mut *d.lock().expect("digest lock"), &buf[..n]);
        }
        Ok(n)
    }
}

/// The decoder under a [`TextReader`].
pub(super) enum Source {
    Utf8(BufReader<Hashed>),
    Utf16(Utf16ToUtf8),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Utf8(r) => r.read(buf),
            Source::Utf16(r) => r.read(buf),
        }
    }
}

/// Open a file for reading as UTF-8, past its byte order mark.
pub(super) fn open_text(path: &Path) -> io::Result<TextReader> {
    open_text_hashed(path, None)
}

/// [`open_text`], feeding the raw bytes to `digest`.
pub(super) fn open_text_hashed(path: &Path, digest: Option<Digest>) -> io::Result<TextReader> {
    let file = Hashed { file: File::open(path)?, digest };
    let mut raw = BufReader::with_capacity(64 * 1024, file);
    let head = loop {
        match raw.fill_buf() {
            Ok(buf) => break buf.get(..3.min(buf.len())).unwrap_or_default().to_vec(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let source = if head.starts_with(b"\xEF\xBB\xBF") {
        raw.consume(3);
        Source::Utf8(raw)
    } else if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        let little = head[0] == 0xFF;
        raw.consume(2);
        Source::Utf16(Utf16ToUtf8 { inner: raw, little, pending: Vec::new(), out: Vec::new(), at: 0 })
    } else {
        Source::Utf8(raw)
    };
    Ok(BufReader::with_capacity(64 * 1024, source))
}

/// Transcodes UTF-16 (either byte order) to UTF-8, one input buffer at a time.
pub(super) struct Utf16ToUtf8 {
    inner: BufReader<Hashed>,
    little: bool,
    /// Code units (or a half unit) not decoded yet: a high surrogate waits
    /// for its pair.
    pending: Vec<u8>,
    out: Vec<u8>,
    at: usize,
}

impl Utf16ToUtf8 {
    /// Decode the next buffer of input into `out`; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        let n = loop {
            match self.inner.fill_buf() {
                Ok(buf) => {
                    self.pending.extend_from_slice(buf);
                    break buf.len();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let eof = n == 0;
        self.inner.consume(n);
        self.out.clear();
        self.at = 0;
        let little = self.little;
        let unit = |pair: &[u8]| {
            if little {
                u16::from_le_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], pair[1]])
            }
        };
        let mut units: Vec<u16> = self.pending.chunks_exact(2).map(unit).collect();
        let mut keep: Vec<u8> = self.pending.chunks_exact(2).remainder().to_vec();
        // A high surrogate at the end waits for the next buffer.
        if !eof && units.last().is_some_and(|u| (0xD800..0xDC00).contains(u)) {
            let last = units.pop().expect("checked");
            let mut bytes = if little { last.to_le_bytes() } else { last.to_be_bytes() }.to_vec();
            bytes.extend_from_slice(&keep);
            keep = bytes;
        }
        let mut utf8 = [0u8; 4];
        for c in char::decode_utf16(units) {
            let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
            self.out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
        if eof && !keep.is_empty() {
            // An odd byte at the very end.
            self.out.extend_from_slice(char::REPLACEMENT_CHARACTER.encode_utf8(&mut utf8).as_bytes());
            keep.clear();
        }
        self.pending = keep;
        Ok(!(eof && self.out.is_empty()))
    }
}

impl Read for Utf16ToUtf8 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The delimiter of a CSV file, from its header line: whichever of `,`,
/// `;` and TAB occurs most often outside quotes (`,` on a tie or none).
pub(super) fn sniff_delimiter(path: &Path) -> io::Result<u8> {
    let mut reader = open_text(path)?;
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in &line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let delimiters = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).expect("three candidates");
    Ok(if counts[best] == 0 { b',' } else { delimiters[best] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, little: bool) -> Vec<u8> {
        let mut bytes = if little { vec![0xFF, 0xFE] } else { vec![0xFE, 0xFF] };
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&if little { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        bytes
    }

    fn read(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, bytes).unwrap();
        let mut s = String::new();
        open_text(&path).unwrap().read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn utf16_both_byte_orders_and_utf8_bom() {
        let text = "organization\temail\r\nÜnïcödé 😀\tann@example.com\r\n";
        assert_eq!(read(&utf16(text, true)), text);
        assert_eq!(read(&utf16(text, false)), text);
        assert_eq!(read(b"\xEF\xBB\xBFa,b\n"), "a,b\n");
        assert_eq!(read(b"a,b\n"), "a,b\n");
    }

    #[test]
    fn utf16_across_buffer_boundaries() {
        // Far beyond one 64 KiB buffer, with surrogate pairs at every offset.
        let text: String = (0..40_000).map(|i| if i % 3 == 0 { "😀" } else { "é" }).collect();
        assert_eq!(read(&utf16(&text, true)), text);
        let mut odd = utf16("ab", true);
        odd.push(0x41);
        assert_eq!(read(&odd), "ab\u{fffd}");
    }

    #[test]
    fn delimiter_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let sniff = |text: &[u8]| {
            let path = dir.path().join("d.csv");
            std::fs::write(&path, text).unwrap();
            sniff_delimiter(&path).unwrap()
        };
        assert_eq!(sniff(b"organization;email;full name\nA,B;x;y\n"), b';');
        assert_eq!(sniff(b"organization\temail\n"), b'\t');
        assert_eq!(sniff(b"\"a;b\",c\n"), b',');
        assert_eq!(sniff(b"name\n"), b',');
        assert_eq!(sniff(&utf16("organization\temail\r\n", true)), b'\t');
    }
}
