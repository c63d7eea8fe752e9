//! An I/O-like stream workload: log lines read through `BufRead::lines` from a text
//! generated in memory, shared by the stream bench and `examples/stream_allocator.rs`.

use std::io::BufRead as _;
use std::sync::Arc;

/// A generated text held in memory, cheap to clone; read through `BufRead`.
#[derive(Clone)]
pub struct Text(Arc<[u8]>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `lines` log-like lines of 40 to 90 bytes; line `i` has the field `id=i`.
pub fn generate_text(lines: u64) -> Text {
    let mut out = String::new();
    for i in 0..lines {
        let pad = "x".repeat((super::tiny(i) % 50) as usize);
        out.push_str(&format!("2026-12-07T00:00:{:02} level={} id={i} msg={pad}\n", i % 60, super::tiny(i) % 4));
    }
    Text(Arc::from(out.into_bytes()))
}

/// The text's lines, as a program reading a file would get them (a `String` each).
pub fn lines_of(text: &Text) -> std::io::Lines<std::io::BufReader<std::io::Cursor<Text>>> {
    std::io::BufReader::new(std::io::Cursor::new(text.clone())).lines()
}

/// The work per line: the value of its `id` field.
pub fn line_id(line: &str) -> u64 {
    line.split(' ').nth(2).and_then(|f| f.strip_prefix("id=")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A line rewritten for the output: a new `String` per line (allocated where the line
/// is processed, freed where it is written).
pub fn rewrite(line: &str) -> String {
    let mut fields = line.split(' ');
    let (time, level, id) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), line_id(line));
    format!("{id:>8} {level} {time}\n")
}

/// The pipeline read, rewrite, write in input order, one line after another.
pub fn pipeline_sequential(text: &Text) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines_of(text) {
        out.extend_from_slice(rewrite(&line.expect("in-memory text")).as_bytes());
    }
    out
}

/// The same pipeline through an ordered stream on `pool`.
pub fn pipeline_stream(pool: &fanout::Pool, text: &Text) -> Vec<u8> {
    let mut out = Vec::new();
    pool.stream(lines_of(text))
        .map(|line| rewrite(&line.expect("in-memory text")))
        .for_each(|s| out.extend_from_slice(s.as_bytes()))
        .expect("no stage fails");
    out
}
