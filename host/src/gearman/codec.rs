//! A `tokio_util` codec that turns a byte stream into [`Packet`]s and back.
//!
//! Decoding accepts either magic, refuses a body larger than the configured maximum before
//! allocating anything for it, splits the body by the type's arity and decodes unknown types as
//! [`PacketType::Unknown`] (the caller logs and skips them). Encoding checks the arity and that only
//! the last argument contains NUL, so a bad packet never reaches the wire.
//!
//! A worker must not treat an over-large *job* as a broken connection: gearmand would re-queue
//! the job and hand it straight back, forever. [`WorkerCodec`] therefore consumes the body of an
//! over-large `JOB_ASSIGN`/`JOB_ASSIGN_UNIQ` as it streams in, keeping only the small
//! handle/function/unique prefix (never the data), and yields [`Frame::OversizedJob`] so the
//! worker can fail that one job and carry on. Any other over-large packet stays a protocol error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::Error;
use super::packet::{
    Magic, Packet, PacketType, HEADER_LEN, MAX_FUNCTION_LEN, MAX_HANDLE_LEN, MAX_UNIQUE_LEN,
};

/// Default largest body accepted: generous for Zuul's JSON parameters, small enough to be safe.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// Gearman binary-protocol codec.
#[derive(Debug, Clone)]
pub struct PacketCodec {
    max_body: usize,
}

impl PacketCodec {
    /// A codec that rejects (as a protocol error) any incoming or outgoing body longer than
    /// `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        PacketCodec { max_body }
    }

    /// The largest body this codec accepts.
    pub fn max_body(&self) -> usize {
        self.max_body
    }
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec::new(DEFAULT_MAX_BODY)
    }
}

/// Splits `body` into `arity` arguments; the last one takes the rest of the body.
fn split_args(kind: PacketType, mut body: Bytes) -> Result<Vec<Bytes>, Error> {
    let arity = kind.arity();
    let mut args = Vec::with_capacity(arity);
    if arity == 0 {
        if !body.is_empty() {
            // Be lenient: a body on an argument-less packet carries nothing we could use.
            tracing::debug!(packet = %kind, len = body.len(), "ignoring body of argument-less packet");
        }
        return Ok(args);
    }
    for i in 0..arity - 1 {
        match body.iter().position(|&b| b == 0) {
            Some(pos) => {
                let arg = body.split_to(pos);
                body.advance(1);
                args.push(arg);
            }
            None => {
                return Err(Error::protocol(format!(
                    "{kind} needs {arity} arguments, body has only {}",
                    i + 1
                )))
            }
        }
    }
    args.push(body);
    Ok(args)
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, Error> {
        if src.len() < 4 {
            // Reject bad magic as early as the bytes allow, so garbage fails fast.
            if !(b"\0REQ".starts_with(src) || b"\0RES".starts_with(src)) {
                return Err(bad_magic(src));
            }
            return Ok(None);
        }
        let magic = Magic::from_bytes(&src[..4]).ok_or_else(|| bad_magic(src))?;
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let code = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        let len = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as usize;
        let kind = PacketType::from_code(code);
        if len > self.max_body {
            return Err(Error::protocol(format!(
                "{kind} body of {len} bytes exceeds the limit of {} bytes",
                self.max_body
            )));
        }
        let total = HEADER_LEN + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len).freeze();
        let args = split_args(kind, body)?;
        Ok(Some(Packet { magic, kind, args }))
    }
}

fn bad_magic(src: &[u8]) -> Error {
    let shown = &src[..src.len().min(4)];
    Error::protocol(format!("bad packet magic {shown:?}"))
}

/// Checks that `packet` can be encoded unambiguously: the arity matches and only the last
/// argument contains NUL.
fn check_encodable(packet: &Packet) -> Result<(), Error> {
    let kind = packet.kind;
    if !matches!(kind, PacketType::Unknown(_)) && packet.args.len() != kind.arity() {
        return Err(Error::protocol(format!(
            "{kind} takes {} arguments, got {}",
            kind.arity(),
            packet.args.len()
        )));
    }
    if let Some((_, init)) = packet.args.split_last() {
        if let Some(i) = init.iter().position(|a| a.contains(&0)) {
            return Err(Error::protocol(format!("{kind} argument {i} contains NUL")));
        }
    }
    Ok(())
}

impl Encoder<Packet> for PacketCodec {
    type Error = Error;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_ref(&packet, dst)
    }
}

impl PacketCodec {
    /// Encodes `packet` into `dst` (the [`Encoder`] impl without taking ownership).
    ///
    /// # Errors
    /// [`Error::Protocol`] when the arguments do not fit the type's arity, a non-last argument
    /// contains NUL, or the body exceeds the limit.
    pub fn encode_ref(&self, packet: &Packet, dst: &mut BytesMut) -> Result<(), Error> {
        check_encodable(packet)?;
        let len = packet.body_len();
        if len > self.max_body {
            return Err(Error::protocol(format!(
                "{} body of {len} bytes exceeds the limit of {} bytes",
                packet.kind, self.max_body
            )));
        }
        let len32 = u32::try_from(len)
            .map_err(|_| Error::protocol(format!("body of {len} bytes is too large")))?;
        dst.reserve(HEADER_LEN + len);
        dst.put_slice(&packet.magic.bytes());
        dst.put_u32(packet.kind.code());
        dst.put_u32(len32);
        for (i, arg) in packet.args.iter().enumerate() {
            if i > 0 {
                dst.put_u8(0);
            }
            dst.put_slice(arg);
        }
        Ok(())
    }
}

/// What a worker's connection reads: a packet, or a job too large to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A packet within the size limit.
    Packet(Packet),
    /// A `JOB_ASSIGN`/`JOB_ASSIGN_UNIQ` whose body exceeded the limit; its data was discarded.
    OversizedJob(OversizedJob),
}

/// The identifying part of an over-large job assignment (its data was read and discarded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedJob {
    /// `JOB_ASSIGN_UNIQ` or `JOB_ASSIGN`.
    pub kind: PacketType,
    /// The job handle (what the failure is reported on).
    pub handle: Bytes,
    /// The Gearman function it was assigned for.
    pub function: Bytes,
    /// The unique id (empty for `JOB_ASSIGN`).
    pub unique: Bytes,
    /// Size of the discarded job data.
    pub data_len: usize,
}

/// Longest handle/function/unique prefix kept from an over-large job (with its separators);
/// generous over gearmand's own limits, since Zuul's server has none.
const MAX_JOB_PREFIX: usize = 4 * (MAX_HANDLE_LEN + MAX_FUNCTION_LEN + MAX_UNIQUE_LEN);

/// The body of an over-large job assignment being consumed.
#[derive(Debug)]
struct Skipping {
    kind: PacketType,
    /// Body bytes not read yet.
    remaining: usize,
    /// Total body length.
    body_len: usize,
    /// The arguments before the data, with their NUL separators, as far as read.
    prefix: Vec<u8>,
    /// Separators still to find before the data starts.
    separators: usize,
}

impl Skipping {
    fn new(kind: PacketType, body_len: usize) -> Self {
        Skipping {
            kind,
            remaining: body_len,
            body_len,
            prefix: Vec::new(),
            separators: kind.arity() - 1,
        }
    }

    /// Takes the next piece of the body: the prefix is kept (bounded), the data dropped.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        while self.separators > 0 && !rest.is_empty() {
            let end = rest.iter().position(|&b| b == 0);
            let take = end.map_or(rest.len(), |i| i + 1);
            if self.prefix.len() + take > MAX_JOB_PREFIX {
                return Err(Error::protocol(format!(
                    "over-large {} whose handle, function and unique exceed {MAX_JOB_PREFIX} bytes",
                    self.kind
                )));
            }
            self.prefix.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if end.is_some() {
                self.separators -= 1;
            }
        }
        self.remaining -= chunk.len();
        Ok(())
    }

    fn finish(self) -> Result<OversizedJob, Error> {
        if self.separators > 0 {
            return Err(Error::protocol(format!(
                "over-large {} without its {} arguments",
                self.kind,
                self.kind.arity()
            )));
        }
        let data_len = self.body_len - self.prefix.len();
        let mut args = split_args(self.kind, Bytes::from(self.prefix))?;
        // The last "argument" is the empty rest after the final separator.
        args.pop();
        let mut args = args.into_iter();
        let mut next = || args.next().unwrap_or_default();
        let (handle, function) = (next(), next());
        Ok(OversizedJob {
            kind: self.kind,
            handle,
            function,
            unique: next(),
            data_len,
        })
    }
}

/// The worker's decoder: [`PacketCodec`], except that an over-large job assignment is consumed
/// in a bounded way (its data is never buffered) and yielded as [`Frame::OversizedJob`].
#[derive(Debug)]
pub struct WorkerCodec {
    packets: PacketCodec,
    skipping: Option<Skipping>,
}

impl WorkerCodec {
    /// A decoder with the given body limit.
    pub fn new(max_body: usize) -> Self {
        WorkerCodec {
            packets: PacketCodec::new(max_body),
            skipping: None,
        }
    }

    /// The header of an over-large job assignment at the start of `src`, if that is what it is.
    fn oversized_job_header(&self, src: &[u8]) -> Option<(PacketType, usize)> {
        let header = src.get(..HEADER_LEN)?;
        Magic::from_bytes(&header[..4])?;
        let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let kind = PacketType::from_code(code);
        let is_job = matches!(kind, PacketType::JobAssign | PacketType::JobAssignUniq);
        (is_job && len > self.packets.max_body()).then_some((kind, len))
    }
}

impl Decoder for WorkerCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.skipping.is_none() {
            let Some((kind, len)) = self.oversized_job_header(src) else {
                return Ok(self.packets.decode(src)?.map(Frame::Packet));
            };
            src.advance(HEADER_LEN);
            self.skipping = Some(Skipping::new(kind, len));
        }
        let Some(skipping) = self.skipping.as_mut() else {
            return Ok(None);
        };
        let take = src.len().min(skipping.remaining);
        skipping.feed(&src[..take])?;
        src.advance(take);
        if skipping.remaining > 0 {
            return Ok(None);
        }
        match self.skipping.take() {
            Some(done) => Ok(Some(Frame::OversizedJob(done.finish()?))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(p: &Packet) -> BytesMut {
        let mut buf = BytesMut::new();
        PacketCodec::default().encode_ref(p, &mut buf).unwrap();
        buf
    }

    fn decode_all(bytes: &[u8]) -> Result<Option<Packet>, Error> {
        let mut buf = BytesMut::from(bytes);
        PacketCodec::default().decode(&mut buf)
    }

    #[test]
    fn encodes_wire_format() {
        let p = Packet::work_data(Bytes::from_static(b"H:x:1"), Bytes::from_static(b"a\0b"));
        let buf = encode(&p);
        assert_eq!(&buf[..], b"\0REQ\0\0\0\x1c\0\0\0\x09H:x:1\0a\0b");
        assert_eq!(Packet::grab_job_uniq().kind.code(), 30);
        assert_eq!(
            &encode(&Packet::grab_job_uniq())[..],
            b"\0REQ\0\0\0\x1e\0\0\0\0"
        );
    }

    #[test]
    fn decodes_job_assign_uniq_with_nul_in_data() {
        let wire = b"\0RES\0\0\0\x1f\0\0\0\x0dH:1\0f\0u\0{\0}\0!";
        let p = decode_all(wire).unwrap().unwrap();
        assert_eq!(p.magic, Magic::Res);
        assert_eq!(p.kind, PacketType::JobAssignUniq);
        assert_eq!(p.args, vec![&b"H:1"[..], b"f", b"u", b"{\0}\0!"]);
    }

    #[test]
    fn accepts_either_magic() {
        let mut req = encode(&Packet::res(PacketType::Noop, vec![]));
        assert_eq!(decode_all(&req).unwrap().unwrap().magic, Magic::Res);
        req[3] = b'Q';
        assert_eq!(decode_all(&req).unwrap().unwrap().magic, Magic::Req);
    }

    #[test]
    fn bad_magic_is_an_error() {
        assert!(matches!(
            decode_all(b"\0REX\0\0\0\x06\0\0\0\0"),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_all(b"GET / HTTP/1.1"),
            Err(Error::Protocol(_))
        ));
        // Garbage is caught from the first byte, not only once 4 bytes arrived.
        assert!(matches!(decode_all(b"s"), Err(Error::Protocol(_))));
    }

    #[test]
    fn oversized_body_is_rejected_without_allocating() {
        let mut codec = PacketCodec::new(100);
        let mut buf = BytesMut::from(&b"\0RES\0\0\0\x1c\x7f\xff\xff\xff"[..]);
        let cap = buf.capacity();
        assert!(matches!(codec.decode(&mut buf), Err(Error::Protocol(_))));
        assert_eq!(buf.capacity(), cap);
        // Exactly at the limit is fine.
        let p = Packet::res(PacketType::EchoRes, vec![Bytes::from(vec![7u8; 100])]);
        let mut buf = BytesMut::new();
        codec.encode_ref(&p, &mut buf).unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), p);
        // One above is refused on encode too.
        let p = Packet::res(PacketType::EchoRes, vec![Bytes::from(vec![7u8; 101])]);
        assert!(codec.encode_ref(&p, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn unknown_type_is_decoded_as_unknown() {
        let wire = b"\0RES\0\0\x01\0\0\0\0\x03a\0b";
        let p = decode_all(wire).unwrap().unwrap();
        assert_eq!(p.kind, PacketType::Unknown(256));
        assert_eq!(p.args, vec![&b"a\0b"[..]]);
    }

    #[test]
    fn too_few_arguments_is_an_error() {
        // JOB_ASSIGN_UNIQ needs 3 separators; this body has 2.
        let wire = b"\0RES\0\0\0\x1f\0\0\0\x05H\0f\0u";
        assert!(matches!(decode_all(wire), Err(Error::Protocol(_))));
        // WORK_STATUS with no separators at all.
        let wire = b"\0REQ\0\0\0\x0c\0\0\0\x01H";
        assert!(matches!(decode_all(wire), Err(Error::Protocol(_))));
    }

    #[test]
    fn argumentless_packet_with_body_is_tolerated() {
        let wire = b"\0RES\0\0\0\x06\0\0\0\x02xx";
        let p = decode_all(wire).unwrap().unwrap();
        assert_eq!(p.kind, PacketType::Noop);
        assert!(p.args.is_empty());
    }

    #[test]
    fn server_error_with_trailing_nul() {
        // Zuul's server ends ERROR bodies with a NUL.
        let wire = b"\0RES\0\0\0\x13\0\0\0\x0eJOB_NOT_FOUND\0";
        let p = decode_all(b"\0RES\0\0\0\x13\0\0\0\x0fJOB_NOT_FOUND\0x")
            .unwrap()
            .unwrap();
        assert_eq!(p.args, vec![&b"JOB_NOT_FOUND"[..], b"x"]);
        let p = decode_all(wire).unwrap().unwrap();
        assert_eq!(p.args, vec![&b"JOB_NOT_FOUND"[..], b""]);
    }

    #[test]
    fn encoder_rejects_bad_arity_and_inner_nul() {
        let codec = PacketCodec::default();
        let bad = Packet::req(PacketType::WorkData, vec![Bytes::from_static(b"H")]);
        assert!(codec.encode_ref(&bad, &mut BytesMut::new()).is_err());
        let bad = Packet::req(
            PacketType::WorkData,
            vec![Bytes::from_static(b"H\0"), Bytes::from_static(b"d")],
        );
        assert!(codec.encode_ref(&bad, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn decodes_several_packets_from_one_buffer() {
        let mut buf = encode(&Packet::res(PacketType::NoJob, vec![]));
        buf.extend_from_slice(&encode(&Packet::res(PacketType::Noop, vec![])));
        let mut codec = PacketCodec::default();
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            PacketType::NoJob
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            PacketType::Noop
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    /// A `JOB_ASSIGN_UNIQ` of `data_len` bytes of data, then a `NOOP`.
    fn big_job_then_noop(data_len: usize) -> Vec<u8> {
        let data = Bytes::from(vec![b'x'; data_len]);
        let p = Packet::res(
            PacketType::JobAssignUniq,
            vec![
                Bytes::from_static(b"H:host:7"),
                Bytes::from_static(b"build:x"),
                Bytes::from_static(b"uuid1"),
                data,
            ],
        );
        let mut wire = BytesMut::new();
        PacketCodec::new(usize::MAX)
            .encode_ref(&p, &mut wire)
            .unwrap();
        wire.extend_from_slice(&encode(&Packet::res(PacketType::Noop, vec![])));
        wire.to_vec()
    }

    fn expected_oversized(data_len: usize) -> Frame {
        Frame::OversizedJob(OversizedJob {
            kind: PacketType::JobAssignUniq,
            handle: Bytes::from_static(b"H:host:7"),
            function: Bytes::from_static(b"build:x"),
            unique: Bytes::from_static(b"uuid1"),
            data_len,
        })
    }

    /// Feeds `wire` to a fresh worker codec in pieces cut at `cuts`, collecting the frames;
    /// checks that the buffer never holds more than one piece plus a header's worth.
    fn feed(max: usize, wire: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, Error> {
        let mut codec = WorkerCodec::new(max);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < wire.len()).collect();
        bounds.push(wire.len());
        bounds.sort_unstable();
        let mut at = 0;
        for end in bounds {
            buf.extend_from_slice(&wire[at..end]);
            while let Some(f) = codec.decode(&mut buf)? {
                frames.push(f);
            }
            assert!(
                buf.len() <= HEADER_LEN + max,
                "buffered {} bytes",
                buf.len()
            );
            at = end;
        }
        Ok(frames)
    }

    #[test]
    fn oversized_job_is_consumed_and_yielded() {
        let wire = big_job_then_noop(100_000);
        let frames = feed(1024, &wire, &[]).unwrap();
        assert_eq!(
            frames,
            vec![
                expected_oversized(100_000),
                Frame::Packet(Packet::res(PacketType::Noop, vec![]))
            ]
        );
        // Within the limit it is an ordinary packet.
        let frames = feed(1 << 20, &wire, &[]).unwrap();
        assert!(matches!(&frames[0], Frame::Packet(p) if p.kind == PacketType::JobAssignUniq));
    }

    #[test]
    fn oversized_job_streams_through_in_small_reads() {
        // 16 KiB reads (what the worker's socket gives) over a 1 MiB job: nothing accumulates.
        let wire = big_job_then_noop(1 << 20);
        let cuts: Vec<usize> = (1..wire.len() / 16384 + 1).map(|i| i * 16384).collect();
        let frames = feed(64 * 1024, &wire, &cuts).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], expected_oversized(1 << 20));
    }

    #[test]
    fn oversized_job_assign_without_unique() {
        let p = Packet::res(
            PacketType::JobAssign,
            vec![
                Bytes::from_static(b"H:1"),
                Bytes::from_static(b"f"),
                Bytes::from(vec![0u8; 5000]),
            ],
        );
        let mut wire = BytesMut::new();
        PacketCodec::new(usize::MAX)
            .encode_ref(&p, &mut wire)
            .unwrap();
        let frames = feed(1024, &wire, &[13, 14, 15, 16, 17]).unwrap();
        assert_eq!(
            frames,
            vec![Frame::OversizedJob(OversizedJob {
                kind: PacketType::JobAssign,
                handle: Bytes::from_static(b"H:1"),
                function: Bytes::from_static(b"f"),
                unique: Bytes::new(),
                data_len: 5000,
            })]
        );
    }

    #[test]
    fn other_oversized_packets_and_bad_job_prefixes_stay_errors() {
        // An over-large packet that is not a job.
        let mut wire = BytesMut::new();
        let p = Packet::res(PacketType::EchoRes, vec![Bytes::from(vec![1u8; 2000])]);
        PacketCodec::new(usize::MAX)
            .encode_ref(&p, &mut wire)
            .unwrap();
        assert!(feed(1024, &wire, &[]).is_err());
        // A job whose "handle" never ends: refused once the kept prefix would pass its bound.
        let mut wire = b"\0RES\0\0\0\x1f".to_vec();
        wire.extend_from_slice(&(100_000u32).to_be_bytes());
        wire.extend_from_slice(&vec![b'h'; 100_000]);
        assert!(matches!(feed(1024, &wire, &[]), Err(Error::Protocol(_))));
        // A job whose body ends before its arguments do.
        let mut wire = b"\0RES\0\0\0\x1f".to_vec();
        wire.extend_from_slice(&(2000u32).to_be_bytes());
        wire.extend_from_slice(b"H\0f");
        wire.extend_from_slice(&[b'u'; 1997]);
        assert!(matches!(feed(1024, &wire, &[]), Err(Error::Protocol(_))));
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let kinds: Vec<PacketType> = PacketType::KNOWN
            .iter()
            .copied()
            .chain([PacketType::Unknown(5), PacketType::Unknown(4242)])
            .collect();
        (
            proptest::sample::select(kinds),
            any::<bool>(),
            proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..20),
                5,
            ),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(kind, req, inner, last)| {
                let arity = kind.arity();
                let mut args: Vec<Bytes> = inner
                    .into_iter()
                    .take(arity.saturating_sub(1))
                    .map(Bytes::from)
                    .collect();
                if arity > 0 {
                    args.push(Bytes::from(last));
                }
                let magic = if req { Magic::Req } else { Magic::Res };
                Packet::new(magic, kind, args)
            })
    }

    proptest! {
        #[test]
        fn encode_decode_identity(p in arb_packet()) {
            let mut buf = encode(&p);
            let mut codec = PacketCodec::default();
            let back = codec.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(back, p);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                max in 0usize..256) {
            let mut codec = PacketCodec::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the codec wants more or errors; it must never panic or loop forever.
            for _ in 0..bytes.len() + 1 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn garbage_after_valid_header_never_panics(
            code in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut wire = b"\0RES".to_vec();
            wire.extend_from_slice(&code.to_be_bytes());
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
            let _ = decode_all(&wire);
        }

        /// Cut anywhere (header, prefix, separators, data, the next packet), any number of
        /// times, an over-large job comes out exactly once, whole, followed by the next packet.
        #[test]
        fn oversized_job_survives_any_split(
            data_len in 1025usize..5000,
            cuts in proptest::collection::vec(0usize..5100, 0..12),
        ) {
            let wire = big_job_then_noop(data_len);
            let frames = feed(1024, &wire, &cuts).unwrap();
            prop_assert_eq!(
                frames,
                vec![
                    expected_oversized(data_len),
                    Frame::Packet(Packet::res(PacketType::Noop, vec![]))
                ]
            );
        }

        #[test]
        fn oversized_job_split_at_every_boundary_of_its_prefix(cut in 0usize..40, second in 0usize..40) {
            let wire = big_job_then_noop(2000);
            let frames = feed(1024, &wire, &[cut, cut + second]).unwrap();
            prop_assert_eq!(frames[0].clone(), expected_oversized(2000));
            prop_assert_eq!(frames.len(), 2);
        }

        #[test]
        fn every_truncation_needs_more(p in arb_packet()) {
            let full = encode(&p);
            let mut codec = PacketCodec::default();
            for cut in 0..full.len() {
                let mut buf = BytesMut::from(&full[..cut]);
                prop_assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {}", cut);
            }
            // And feeding it byte by byte into one buffer yields it exactly once, at the end.
            let mut buf = BytesMut::new();
            for (i, b) in full.iter().enumerate() {
                buf.put_u8(*b);
                let got = codec.decode(&mut buf).unwrap();
                prop_assert_eq!(got.is_some(), i + 1 == full.len());
            }
        }
    }
}
