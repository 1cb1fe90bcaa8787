//! Terminal output as asciicast v2, the format `asciinema` plays: a header
//! line (a JSON object: version, size, start time, command) then one line
//! per output chunk, `[seconds since the start, "o", text]`.
//!
//! Pure: the companion passes each chunk's time in, so the encoding is
//! tested with made-up times; `airlock session play` reads the same text
//! back and replays it with its waits injected.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

/// What the header line says about the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub width: u16,
    pub height: u16,
    /// The session's start, Unix seconds.
    pub timestamp: i64,
    /// The command asked for; `None`: a shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `TERM` and `SHELL`, as asciinema records them.
    pub env: HeaderEnv,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct HeaderEnv {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

#[derive(Serialize)]
struct HeaderLine<'a> {
    version: u8,
    #[serde(flatten)]
    header: &'a Header,
}

/// Builds a recording within a byte bound: output past it is cut whole
/// (nothing later is kept once something was cut, so what is kept is a
/// true prefix of the session) and counted.
#[derive(Debug)]
pub struct Recorder {
    text: String,
    max_bytes: usize,
    /// The start of a UTF-8 character whose end has not arrived yet.
    pending: Vec<u8>,
    cut_bytes: u64,
    cut_from: Option<Duration>,
}

/// A finished recording and, if anything was cut, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub text: String,
    pub cut: Option<String>,
}

impl Recorder {
    /// A recording starting with `header`'s line, at most `max_bytes` long
    /// (the header is always kept).
    pub fn new(header: &Header, max_bytes: usize) -> Recorder {
        let mut text = serde_json::to_string(&HeaderLine { version: 2, header })
            .unwrap_or_else(|_| String::from("{\"version\":2}"));
        text.push('\n');
        Recorder {
            text,
            max_bytes,
            pending: Vec::new(),
            cut_bytes: 0,
            cut_from: None,
        }
    }

    /// Output `bytes` at `at` after the start. Bytes that are not UTF-8
    /// become U+FFFD; a character split between two chunks is kept whole
    /// in the later one.
    pub fn output(&mut self, at: Duration, bytes: &[u8]) {
        let mut joined = std::mem::take(&mut self.pending);
        joined.extend_from_slice(bytes);
        let mut data = String::new();
        let mut rest: &[u8] = &joined;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    data.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    data.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            data.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(bad..).unwrap_or_default();
                        }
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        if !data.is_empty() {
            self.event(at, &data);
        }
    }

    fn event(&mut self, at: Duration, data: &str) {
        let line = event_line(at, data);
        if self.cut_from.is_none() && self.text.len() + line.len() <= self.max_bytes {
            self.text.push_str(&line);
        } else {
            self.cut_from.get_or_insert(at);
            self.cut_bytes += data.len() as u64;
        }
    }

    /// The recording, with whatever was still pending written out.
    pub fn finish(mut self, at: Duration) -> Recording {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.event(at, &String::from_utf8_lossy(&pending));
        }
        let cut = self.cut_from.map(|from| {
            format!(
                "output from {:.1}s on not kept: {} bytes past the recording's bound of {} bytes",
                from.as_secs_f64(),
                self.cut_bytes,
                self.max_bytes
            )
        });
        Recording {
            text: self.text,
            cut,
        }
    }
}

/// One output event's line.
fn event_line(at: Duration, data: &str) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| String::from("\"\""));
    format!(
        "[{}.{:06}, \"o\", {data}]\n",
        at.as_secs(),
        at.subsec_micros()
    )
}

/// A recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub width: u64,
    pub height: u64,
    pub events: Vec<Event>,
}

/// One event: seconds since the start, its kind (`o`: output), its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub kind: String,
    pub data: String,
}

/// Why a recording does not read as asciicast v2: the line (from 1) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CastError {
    pub line: usize,
    pub message: String,
}

/// Reads asciicast v2 text.
pub fn parse(text: &str) -> Result<Cast, CastError> {
    let fail = |line: usize, message: &str| CastError {
        line,
        message: message.to_owned(),
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, first) = lines
        .next()
        .ok_or_else(|| fail(1, "empty: no header line"))?;
    let header: serde_json::Value = serde_json::from_str(first)
        .map_err(|e| fail(1, &format!("the header is not JSON: {e}")))?;
    if header.get("version").and_then(serde_json::Value::as_u64) != Some(2) {
        return Err(fail(1, "the header must say `\"version\": 2`"));
    }
    let size = |key: &str| header.get(key).and_then(serde_json::Value::as_u64);
    let (Some(width), Some(height)) = (size("width"), size("height")) else {
        return Err(fail(1, "the header must give `width` and `height`"));
    };
    let mut events = Vec::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (time, kind, data): (f64, String, String) =
            serde_json::from_str(line).map_err(|e| {
                fail(
                    number,
                    &format!("an event must be `[time, kind, text]`: {e}"),
                )
            })?;
        if !time.is_finite() || time < 0.0 {
            return Err(fail(
                number,
                "an event's time must be seconds from the start",
            ));
        }
        events.push(Event { time, kind, data });
    }
    Ok(Cast {
        width,
        height,
        events,
    })
}

/// How to replay: at `speed` times the recorded pace, or without waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    Speed(f64),
    NoWaits,
}

/// Writes `cast`'s output events to `out`, calling `wait` with the pause
/// before each (as recorded, divided by the speed; none without waits).
/// Events out of order wait nothing.
pub fn play(
    cast: &Cast,
    out: &mut dyn Write,
    pace: Pace,
    wait: &mut dyn FnMut(Duration),
) -> io::Result<()> {
    let mut clock = 0.0_f64;
    for event in cast.events.iter().filter(|e| e.kind == "o") {
        if let Pace::Speed(speed) = pace {
            let pause = (event.time - clock) / speed;
            if pause.is_finite() && pause > 0.0 {
                wait(Duration::from_secs_f64(pause.min(86_400.0)));
            }
        }
        clock = clock.max(event.time);
        out.write_all(event.data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            width: 80,
            height: 24,
            timestamp: 1_800_000_000,
            command: Some("uptime".into()),
            env: HeaderEnv {
                term: Some("xterm".into()),
                shell: None,
            },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_recording_is_a_header_line_then_one_line_per_chunk() {
        let mut r = Recorder::new(&header(), 10_000);
        r.output(ms(0), b"$ ");
        r.output(ms(1_500), b"hello \"you\"\r\n\x1b[0m");
        let done = r.finish(ms(2_000));
        assert_eq!(
            done.text,
            "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1800000000,\"command\":\"uptime\",\"env\":{\"TERM\":\"xterm\"}}\n\
             [0.000000, \"o\", \"$ \"]\n\
             [1.500000, \"o\", \"hello \\\"you\\\"\\r\\n\\u001b[0m\"]\n"
        );
        assert_eq!(done.cut, None);
    }

    #[test]
    fn a_character_split_between_reads_is_kept_whole_and_bad_bytes_replaced() {
        let mut r = Recorder::new(&header(), 10_000);
        let e_acute = "é".as_bytes();
        r.output(ms(1), &[b'a', e_acute[0]]);
        r.output(ms(2), &[e_acute[1], 0xff, b'b']);
        r.output(ms(3), &[0xe2, 0x82]);
        let done = r.finish(ms(4));
        let cast = parse(&done.text).unwrap();
        let text: Vec<&str> = cast.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(text, ["a", "é\u{fffd}b", "\u{fffd}"]);
    }

    #[test]
    fn output_past_the_bound_is_cut_whole_and_said() {
        let header_len = Recorder::new(&header(), 0).finish(ms(0)).text.len();
        let one = event_line(ms(1), "0123456789").len();
        let mut r = Recorder::new(&header(), header_len + 2 * one);
        r.output(ms(1), b"0123456789");
        r.output(ms(1), b"0123456789");
        r.output(ms(2_500), b"abc");
        r.output(ms(3_000), b"d");
        let done = r.finish(ms(4_000));
        assert_eq!(done.text.lines().count(), 3, "{}", done.text);
        assert_eq!(
            done.cut.as_deref(),
            Some(&*format!(
                "output from 2.5s on not kept: 4 bytes past the recording's bound of {} bytes",
                header_len + 2 * one
            ))
        );
    }

    #[test]
    fn a_recording_plays_back_its_output_with_its_pauses() {
        let mut r = Recorder::new(&header(), 10_000);
        r.output(ms(500), b"one ");
        r.output(ms(2_500), b"two");
        let cast = parse(&r.finish(ms(3_000)).text).unwrap();
        assert_eq!((cast.width, cast.height), (80, 24));
        let mut out = Vec::new();
        let mut waits = Vec::new();
        play(&cast, &mut out, Pace::Speed(2.0), &mut |d| waits.push(d)).unwrap();
        assert_eq!(out, b"one two");
        assert_eq!(waits, [ms(250), ms(1_000)]);
        let (mut out, mut waits) = (Vec::new(), Vec::new());
        play(&cast, &mut out, Pace::NoWaits, &mut |d| waits.push(d)).unwrap();
        assert_eq!((out.as_slice(), waits.len()), (&b"one two"[..], 0));
    }

    #[test]
    fn what_is_not_asciicast_is_refused_naming_the_line() {
        assert_eq!(parse("").unwrap_err().line, 1);
        assert_eq!(
            parse("{\"version\":1,\"width\":1,\"height\":1}")
                .unwrap_err()
                .line,
            1
        );
        let bad = "{\"version\":2,\"width\":1,\"height\":1}\n[0.1, \"o\", \"x\"]\n[\"o\"]\n";
        assert_eq!(parse(bad).unwrap_err().line, 3);
        let negative = "{\"version\":2,\"width\":1,\"height\":1}\n[-1, \"o\", \"x\"]\n";
        assert_eq!(parse(negative).unwrap_err().line, 2);
    }
}
