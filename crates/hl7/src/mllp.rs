//! MLLP (Minimal Lower Layer Protocol) framing: every HL7 message travels as
//! `0x0B <message> 0x1C 0x0D`, many messages one after another on one TCP connection.
//!
//! The [`Decoder`] is fed whatever the socket delivers and hands back whole frames. It is
//! deliberately forgiving about what lies *between* frames (stray line breaks, keep-alive
//! bytes, the lone `0x0D` some engines send twice): anything outside a frame is counted and
//! dropped. It is strict about size: a frame whose payload grows past the limit is not
//! buffered any further; its remaining bytes are discarded and, when its end arrives, the
//! decoder reports [`FrameError::TooLarge`] with the first bytes of the message, so the
//! caller can still read the MSH and answer with an ACK that names the message.
//!
//! The trailing `0x0D` is optional on input: `0x1C` alone ends a frame (it cannot occur
//! inside HL7 text), and the `0x0D` that normally follows is then simply a byte between
//! frames. A `0x0B` inside a frame starts a new frame: the interrupted one is dropped.

use std::collections::VecDeque;

/// Start of a frame (vertical tab).
pub const START_BLOCK: u8 = 0x0B;
/// End of a frame (file separator).
pub const END_BLOCK: u8 = 0x1C;
/// Sent after [`END_BLOCK`].
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// How much of an oversized message is kept so its header can still be read.
pub const OVERSIZED_HEAD_BYTES: usize = 4096;

/// Wraps one message in an MLLP frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(payload.len() + 3);
    framed.push(START_BLOCK);
    framed.extend_from_slice(payload);
    framed.push(END_BLOCK);
    framed.push(CARRIAGE_RETURN);
    framed
}

/// Why a frame was not delivered whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload was longer than the decoder's limit; `head` holds its first bytes (at most
    /// [`OVERSIZED_HEAD_BYTES`]) and `size` its full length.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize, head: Vec<u8> },
}

#[derive(Debug)]
enum State {
    /// Outside any frame: everything up to the next start byte is dropped.
    Between,
    /// Inside a frame that still fits.
    Inside,
    /// Inside a frame that outgrew the limit: bytes are counted, not kept.
    Discarding { size: usize },
}

/// Turns a byte stream into frames. Feed it with [`Decoder::feed`], then drain
/// [`Decoder::next_frame`]. Memory held is bounded by the limit plus one read buffer.
#[derive(Debug)]
pub struct Decoder {
    limit: usize,
    state: State,
    buf: Vec<u8>,
    ready: VecDeque<Result<Vec<u8>, FrameError>>,
    discarded: u64,
}

impl Decoder {
    /// A decoder that refuses payloads longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { limit: max_message_bytes, state: State::Between, buf: Vec::new(), ready: VecDeque::new(), discarded: 0 }
    }

    /// Consumes bytes as they came off the wire.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Between => match bytes.iter().position(|&b| b == START_BLOCK) {
                    Some(at) => {
                        self.count_discarded(&bytes[..at]);
                        self.start_frame();
                        bytes = &bytes[at + 1..];
                    }
                    None => {
                        self.count_discarded(bytes);
                        return;
                    }
                },
                State::Inside | State::Discarding { .. } => {
                    let boundary = bytes.iter().position(|&b| b == END_BLOCK || b == START_BLOCK);
                    let (content, rest) = match boundary {
                        Some(at) => (&bytes[..at], Some((bytes[at], &bytes[at + 1..]))),
                        None => (bytes, None),
                    };
                    self.take(content);
                    match rest {
                        None => return,
                        Some((END_BLOCK, rest)) => {
                            self.end_frame();
                            bytes = rest;
                        }
                        Some((_, rest)) => {
                            // A new start inside a frame: the sender gave up on the previous one.
                            self.discarded += self.current_size() as u64;
                            self.start_frame();
                            bytes = rest;
                        }
                    }
                }
            }
        }
    }

    /// The next complete frame (or oversized-frame report), in arrival order.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        self.ready.pop_front()
    }

    /// Bytes dropped so far because they were outside any frame (line breaks aside) or in an
    /// abandoned one.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Whether a frame has started and not ended (the peer closed mid-message).
    pub fn has_partial_frame(&self) -> bool {
        !matches!(self.state, State::Between)
    }

    /// Line breaks between frames are normal (the CR after each end byte, engines that add a
    /// newline); only other bytes count as junk.
    fn count_discarded(&mut self, bytes: &[u8]) {
        self.discarded += bytes.iter().filter(|&&b| b != b'\r' && b != b'\n').count() as u64;
    }

    fn start_frame(&mut self) {
        self.buf.clear();
        self.state = State::Inside;
    }

    fn current_size(&self) -> usize {
        match self.state {
            State::Discarding { size } => size,
            _ => self.buf.len(),
        }
    }

    fn take(&mut self, content: &[u8]) {
        match &mut self.state {
            State::Between => {}
            State::Discarding { size } => *size += content.len(),
            State::Inside => {
                if self.buf.len() + content.len() <= self.limit {
                    self.buf.extend_from_slice(content);
                } else {
                    let size = self.buf.len() + content.len();
                    let room = OVERSIZED_HEAD_BYTES.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&content[..room.min(content.len())]);
                    self.buf.truncate(OVERSIZED_HEAD_BYTES);
                    self.buf.shrink_to(OVERSIZED_HEAD_BYTES);
                    self.state = State::Discarding { size };
                }
            }
        }
    }

    fn end_frame(&mut self) {
        let payload = std::mem::take(&mut self.buf);
        let item = match self.state {
            State::Discarding { size } => Err(FrameError::TooLarge { size, limit: self.limit, head: payload }),
            _ => Ok(payload),
        };
        self.ready.push_back(item);
        self.state = State::Between;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut Decoder) -> Vec<Result<Vec<u8>, FrameError>> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn decodes_several_frames_from_one_read() {
        let mut d = Decoder::new(1024);
        let mut wire = frame(b"MSH|one");
        wire.extend(frame(b"MSH|two"));
        d.feed(&wire);
        assert_eq!(frames(&mut d), [Ok(b"MSH|one".to_vec()), Ok(b"MSH|two".to_vec())]);
        assert!(!d.has_partial_frame());
    }

    #[test]
    fn reassembles_a_frame_split_across_reads_byte_by_byte() {
        let mut d = Decoder::new(1024);
        for b in frame(b"MSH|^~\\&|A\rPID|1") {
            d.feed(&[b]);
        }
        assert_eq!(frames(&mut d), [Ok(b"MSH|^~\\&|A\rPID|1".to_vec())]);
    }

    #[test]
    fn drops_junk_between_frames_and_tolerates_a_missing_trailing_cr() {
        let mut d = Decoder::new(1024);
        d.feed(b"\r\n  garbage");
        d.feed(&[START_BLOCK]);
        d.feed(b"MSH|a");
        d.feed(&[END_BLOCK, b'x', b'y', START_BLOCK]);
        d.feed(b"MSH|b");
        d.feed(&[END_BLOCK, CARRIAGE_RETURN, CARRIAGE_RETURN]);
        assert_eq!(frames(&mut d), [Ok(b"MSH|a".to_vec()), Ok(b"MSH|b".to_vec())]);
        assert_eq!(d.discarded_bytes(), 9 + 2);
    }

    #[test]
    fn a_start_byte_inside_a_frame_abandons_the_interrupted_one() {
        let mut d = Decoder::new(1024);
        d.feed(&[START_BLOCK, b'M', b'S', START_BLOCK, b'O', b'K', END_BLOCK, CARRIAGE_RETURN]);
        assert_eq!(frames(&mut d), [Ok(b"OK".to_vec())]);
        assert_eq!(d.discarded_bytes(), 2);
    }

    #[test]
    fn an_oversized_frame_is_reported_with_its_head_and_the_next_frame_still_decodes() {
        let mut d = Decoder::new(16);
        let big = [b"MSH|^~\\&|SENDER".as_slice(), &[b'x'; 10_000]].concat();
        let mut wire = frame(&big);
        wire.extend(frame(b"MSH|small"));
        for chunk in wire.chunks(7) {
            d.feed(chunk);
        }
        let got = frames(&mut d);
        assert_eq!(got.len(), 2);
        let Err(FrameError::TooLarge { size, limit, head }) = &got[0] else { panic!("expected too large: {got:?}") };
        assert_eq!((*size, *limit), (big.len(), 16));
        assert!(head.starts_with(b"MSH|^~\\&|SENDER"));
        assert!(head.len() <= OVERSIZED_HEAD_BYTES);
        assert_eq!(got[1], Ok(b"MSH|small".to_vec()));
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let mut d = Decoder::new(5);
        d.feed(&frame(b"12345"));
        d.feed(&frame(b"123456"));
        let got = frames(&mut d);
        assert_eq!(got[0], Ok(b"12345".to_vec()));
        assert!(matches!(got[1], Err(FrameError::TooLarge { size: 6, .. })));
    }

    #[test]
    fn a_connection_closed_mid_frame_is_visible() {
        let mut d = Decoder::new(64);
        d.feed(&[START_BLOCK, b'M']);
        assert!(d.next_frame().is_none());
        assert!(d.has_partial_frame());
    }
}
