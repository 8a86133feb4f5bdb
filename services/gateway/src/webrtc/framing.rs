//! RFC 4571 framing for ICE-TCP (RFC 6544), sans-IO: on a TCP connection
//! every STUN message, DTLS record and SRTP packet is preceded by its
//! length, 16 bits big-endian.
//!
//! [`Deframer`] takes the bytes of a connection as they are read, in any
//! pieces, and gives back whole packets. Its buffer is fixed: a browser
//! never sends more than a UDP datagram would carry, so a length above
//! [`MAX_FRAME`] means the peer is not speaking RFC 4571 (an HTTP request
//! reads as a length of 18 245) and the connection is to be closed.

/// The longest packet taken from a browser over TCP: an Ethernet MTU,
/// more than any WebRTC packet sent over UDP.
pub const MAX_FRAME: usize = 1500;

/// Room for a few frames per read, so one `read` can take several packets.
const CAPACITY: usize = 4 * (2 + MAX_FRAME);

/// A frame announced a length above [`MAX_FRAME`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {0} bytes, more than {MAX_FRAME}")]
pub struct TooLong(pub usize);

/// Cuts a connection's byte stream into packets.
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8]>,
    /// Bytes read and not yet taken: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new()
    }
}

impl Deframer {
    pub fn new() -> Deframer {
        Deframer { buf: vec![0; CAPACITY].into_boxed_slice(), start: 0, end: 0 }
    }

    /// Where the next read goes; never empty once [`next_packet`](Self::next_packet)
    /// has been called until it returned `Ok(None)`.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            // What is left is one partial frame: move it to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole packet, if one was read. Empty frames are skipped
    /// (RFC 4571 has no use for them). After an error the stream cannot be
    /// resynchronised: close the connection.
    pub fn next_packet(&mut self) -> Result<Option<&[u8]>, TooLong> {
        loop {
            let available = &self.buf[self.start..self.end];
            if available.len() < 2 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([available[0], available[1]]));
            if len > MAX_FRAME {
                return Err(TooLong(len));
            }
            if available.len() < 2 + len {
                return Ok(None);
            }
            let at = self.start + 2;
            self.start = at + len;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if len > 0 {
                return Ok(Some(&self.buf[at..at + len]));
            }
        }
    }
}

/// Appends `packet`, framed, to `out`; false (nothing appended) when it is
/// too long for a 16-bit length.
pub fn frame(packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(packet.len()) else { return false };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in reads of at most `chunk` bytes, as a socket would,
    /// taking every packet after each read.
    fn feed(d: &mut Deframer, bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, TooLong> {
        let mut packets = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = d.spare();
            assert!(!spare.is_empty(), "there is always room for the next read");
            let n = rest.len().min(chunk).min(spare.len());
            spare[..n].copy_from_slice(&rest[..n]);
            d.filled(n);
            rest = &rest[n..];
            while let Some(p) = d.next_packet()? {
                packets.push(p.to_vec());
            }
        }
        Ok(packets)
    }

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            assert!(frame(p, &mut out));
        }
        out
    }

    #[test]
    fn a_frame_split_across_reads_comes_out_whole() {
        let packet: Vec<u8> = (0..1200).map(|i| i as u8).collect();
        let bytes = framed(&[&packet, b"second"]);
        assert_eq!(&bytes[..2], &[0x04, 0xb0], "16-bit big-endian length first");
        for chunk in [1, 2, 3, 7, 1000, 1201, 1202] {
            let mut d = Deframer::new();
            assert_eq!(feed(&mut d, &bytes, chunk).unwrap(), vec![packet.clone(), b"second".to_vec()], "in reads of {chunk}");
        }
    }

    #[test]
    fn several_frames_in_one_read_all_come_out_in_order() {
        let max = vec![0xaa; MAX_FRAME];
        let packets: Vec<&[u8]> = vec![b"stun", &max, b"dtls", &max, &max, b"rtp"];
        let bytes = framed(&packets);
        let mut d = Deframer::new();
        let got = feed(&mut d, &bytes, usize::MAX).unwrap();
        assert_eq!(got, packets.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        // Nothing is left over: the next read starts at the front.
        assert_eq!(d.spare().len(), CAPACITY);
    }

    #[test]
    fn empty_frames_are_skipped_and_oversize_ones_refused() {
        let mut d = Deframer::new();
        let bytes = framed(&[b"", b"a", b"", b""]);
        assert_eq!(feed(&mut d, &bytes, 3).unwrap(), vec![b"a".to_vec()]);

        let mut d = Deframer::new();
        let mut bytes = framed(&[b"ok"]);
        bytes.extend_from_slice(&((MAX_FRAME + 1) as u16).to_be_bytes());
        bytes.extend_from_slice(&[0; 10]);
        assert_eq!(feed(&mut d, &bytes, usize::MAX), Err(TooLong(MAX_FRAME + 1)));

        // Not RFC 4571 at all: an HTTP request.
        let mut d = Deframer::new();
        assert_eq!(feed(&mut d, b"GET / HTTP/1.1\r\n\r\n", 4), Err(TooLong(0x4745)));

        let mut out = Vec::new();
        assert!(!frame(&vec![0; 70_000], &mut out), "a length must fit in 16 bits");
        assert!(out.is_empty());
    }
}
