//! Incremental Server-Sent Events parser.
//!
//! Bytes arrive in arbitrary pieces: an event may be split across reads and
//! one read may hold many events. The parser keeps only the unfinished line
//! and the data of the event being built, and reuses both buffers, so a long
//! stream costs no allocation per chunk. Both are bounded: an event or line
//! longer than the cap stops the parser (the server decides their length).

use crate::limits::MAX_SSE_EVENT_BYTES;

/// A complete event as seen by the consumer.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// The joined `data:` lines of one event (without the `[DONE]` sentinel).
    Data {
        event: Option<&'a str>,
        data: &'a [u8],
    },
    /// The OpenAI end-of-stream sentinel `data: [DONE]`.
    Done,
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: String,
    has_data: bool,
    /// A `\r` ended the previous read; a `\n` starting the next one belongs to it.
    pending_cr: bool,
    /// Lines that are neither fields nor comments (kept for diagnostics).
    invalid_lines: u32,
    /// Most bytes of one line or one event's joined data.
    max_event: usize,
    /// A line or event passed `max_event`; nothing more is parsed.
    too_large: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_event_bytes(MAX_SSE_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_max_event_bytes(max_event: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: String::new(),
            has_data: false,
            pending_cr: false,
            invalid_lines: 0,
            max_event,
            too_large: false,
        }
    }

    /// The cap an event or line passed, once one did: the parser then
    /// ignores everything after it.
    pub fn too_large(&self) -> Option<usize> {
        self.too_large.then_some(self.max_event)
    }

    /// Lines that did not follow the SSE grammar so far.
    pub fn invalid_lines(&self) -> u32 {
        self.invalid_lines
    }

    /// True when bytes of an unfinished event are buffered (a stream that ends
    /// here was cut short).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    /// Feeds bytes; calls `on_event` for every event completed by them.
    pub fn push(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        // An empty read says nothing about a pending `\r` (found by the
        // split property: `data: \r`, ``, `\n` once made a blank line).
        if self.too_large || bytes.is_empty() {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = bytes.split_at(pos);
            let was_cr = tail[0] == b'\r';
            bytes = &tail[1..];
            if was_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.pending_cr = true,
                    _ => {}
                }
            }
            if self.line.is_empty() {
                self.process_line(head, &mut on_event);
            } else if self.line.len() + head.len() > self.max_event {
                self.too_large = true;
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, &mut on_event);
                self.line = line;
                self.line.clear();
            }
            if self.too_large {
                return;
            }
        }
        if self.line.len() + bytes.len() > self.max_event {
            self.too_large = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    self.too_large = true;
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            b"id" | b"retry" => {}
            _ => self.invalid_lines += 1,
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            if self.data.as_slice() == b"[DONE]" {
                on_event(SseEvent::Done);
            } else {
                let event = (!self.event.is_empty()).then_some(self.event.as_str());
                on_event(SseEvent::Data {
                    event,
                    data: &self.data,
                });
            }
        }
        self.data.clear();
        self.event.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Owned {
        Data(Option<String>, String),
        Done,
    }

    fn collect(parser: &mut SseParser, pieces: &[&[u8]]) -> Vec<Owned> {
        let mut out = Vec::new();
        for p in pieces {
            parser.push(p, |e| {
                out.push(match e {
                    SseEvent::Data { event, data } => Owned::Data(
                        event.map(str::to_owned),
                        String::from_utf8(data.to_vec()).unwrap(),
                    ),
                    SseEvent::Done => Owned::Done,
                })
            });
        }
        out
    }

    fn d(s: &str) -> Owned {
        Owned::Data(None, s.to_owned())
    }

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";

    #[test]
    fn many_events_in_one_read() {
        let mut p = SseParser::new();
        let got = collect(&mut p, &[STREAM]);
        assert_eq!(got, vec![d("{\"a\":1}"), d("{\"a\":2}"), Owned::Done]);
        assert!(!p.has_partial());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let expected = collect(&mut SseParser::new(), &[STREAM]);
        for cut in 0..=STREAM.len() {
            let mut p = SseParser::new();
            let got = collect(&mut p, &[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(got, expected, "split at byte {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(collect(&mut SseParser::new(), &bytes), expected);
    }

    #[test]
    fn crlf_and_cr_line_endings_split_anywhere() {
        let crlf = b"data: x\r\n\r\ndata: y\r\rdata: [DONE]\r\n\r\n";
        for cut in 0..=crlf.len() {
            let got = collect(&mut SseParser::new(), &[&crlf[..cut], &crlf[cut..]]);
            assert_eq!(got, vec![d("x"), d("y"), Owned::Done], "split at {cut}");
        }
    }

    #[test]
    fn multi_line_data_named_events_and_unknown_fields() {
        let s = b"event: error\ndata: {\"error\":\ndata: 1}\nid: 7\nbogus line\n\n";
        let mut p = SseParser::new();
        let got = collect(&mut p, &[s]);
        assert_eq!(
            got,
            vec![Owned::Data(Some("error".into()), "{\"error\":\n1}".into())]
        );
        assert_eq!(p.invalid_lines(), 1);
    }

    #[test]
    fn data_without_space_and_empty_events_are_handled() {
        let got = collect(&mut SseParser::new(), &[b"data:x\n\n\n\ndata\n\n"]);
        assert_eq!(got, vec![d("x"), d("")]);
    }

    #[test]
    fn events_and_lines_past_the_cap_stop_the_parser() {
        // One event of many short data lines.
        let mut p = SseParser::with_max_event_bytes(16);
        let got = collect(&mut p, &[b"data: 0123456789\n", b"data: 0123456789\n\n"]);
        assert_eq!((got, p.too_large()), (vec![], Some(16)));
        // One endless line, split across reads.
        let mut p = SseParser::with_max_event_bytes(16);
        let got = collect(
            &mut p,
            &[b"data: x\n\ndata: 01234", b"56789abcdef", b"\n\n"],
        );
        assert_eq!((got, p.too_large()), (vec![d("x")], Some(16)));
        // Nothing after the overrun is parsed, however well-formed.
        let got = collect(&mut p, &[b"data: y\n\n"]);
        assert!(got.is_empty());
        // At the cap exactly is still fine.
        let mut p = SseParser::with_max_event_bytes(16);
        let got = collect(&mut p, &[b"data: 0123456789\n\n"]);
        assert_eq!((got, p.too_large()), (vec![d("0123456789")], None));
    }

    #[test]
    fn unterminated_event_is_reported_as_partial() {
        let mut p = SseParser::new();
        let got = collect(&mut p, &[b"data: {\"a\":1}\n\ndata: {\"a\""]);
        assert_eq!(got, vec![d("{\"a\":1}")]);
        assert!(p.has_partial());
    }

    mod props {
        //! Property tests (FUZZING.md): arbitrary SSE-ish bytes, split anywhere.
        use super::*;
        use proptest::prelude::*;

        /// Bytes built from SSE's own pieces, so cases reach events and
        /// fields, plus any byte at all.
        fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"data:".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"[DONE]".to_vec()),
                Just(b": keep-alive".to_vec()),
                Just(b"event: error".to_vec()),
                Just(b"id: 1".to_vec()),
                Just(br#"{"choices":[{"text":"x"}]}"#.to_vec()),
                proptest::collection::vec(any::<u8>(), 1..8),
            ];
            proptest::collection::vec(piece, 0..48).prop_map(|v| v.concat())
        }

        /// Events as lossy text: these bytes need not be UTF-8.
        fn events(parser: &mut SseParser, pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
            let mut out = Vec::new();
            for p in pieces {
                parser.push(p, |e| {
                    out.push(match e {
                        SseEvent::Data { event, data } => (
                            event.map(str::to_owned),
                            String::from_utf8_lossy(data).into_owned(),
                        ),
                        SseEvent::Done => (None, "[DONE]".to_owned()),
                    })
                });
            }
            out
        }

        /// The split property's first finding: an empty read between a
        /// `\r` and its `\n` made them two line ends (a blank line, so an
        /// event that was never sent).
        #[test]
        fn an_empty_read_between_cr_and_lf_keeps_them_one_line_end() {
            let whole = events(&mut SseParser::new(), &[b"data: \r\n"]);
            let split = events(&mut SseParser::new(), &[b"data: \r", b"", b"\n"]);
            assert_eq!(split, whole);
            assert!(whole.is_empty());
        }

        proptest! {
            #[test]
            fn any_split_gives_the_same_events(
                bytes in sse_bytes(),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let whole = events(&mut SseParser::new(), &[&bytes]);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let mut pieces = Vec::new();
                let mut prev = 0;
                for a in at {
                    pieces.push(&bytes[prev..a]);
                    prev = a;
                }
                pieces.push(&bytes[prev..]);
                let mut p = SseParser::new();
                prop_assert_eq!(events(&mut p, &pieces), whole);
            }

            #[test]
            fn what_is_kept_never_passes_the_cap(bytes in sse_bytes(), max in 1usize..96) {
                let mut p = SseParser::with_max_event_bytes(max);
                let mut longest = 0;
                for chunk in bytes.chunks(7) {
                    p.push(chunk, |e| {
                        if let SseEvent::Data { data, .. } = e {
                            longest = longest.max(data.len());
                        }
                    });
                    prop_assert!(p.line.len() <= max && p.data.len() <= max);
                }
                prop_assert!(longest <= max);
            }
        }
    }
}
