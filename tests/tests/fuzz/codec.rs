//! The Gearman packet codec against any byte stream, cut anywhere: it never panics, decodes the
//! same packets whatever the cuts, refuses a body over its limit before allocating for it, and
//! holds at most its limit plus what it was given.
//!
//! Corpus (`tests/corpus/codec/`): raw wire bytes, replayed with the default 16 MiB limit whole,
//! byte by byte and cut in two; `ok-*` must decode to the end, `err-*` must be refused, `more-*`
//! must decode what is complete and wait for the rest.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use turbo_hipster::gearman::codec::{PacketCodec, DEFAULT_MAX_BODY};
use turbo_hipster::gearman::packet::{Magic, Packet, PacketType, HEADER_LEN};
use turbo_hipster_tests::fuzz;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Every byte given was decoded; this many wait for more.
    NeedMore(usize),
    /// The codec refused the stream (the worker drops the connection).
    Refused,
}

/// Feeds `chunks` one after another into one buffer, decoding after each as the worker does,
/// and checks the memory bound after every call: at most the bytes given so far plus one
/// header and one body of the limit (twice, for the allocator's doubling).
fn decode_chunks(chunks: &[&[u8]], max_body: usize) -> (Vec<Packet>, End) {
    let mut codec = PacketCodec::new(max_body);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut fed = 0usize;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let before = buf.len();
            let got = codec.decode(&mut buf);
            let bound = 2 * (fed + HEADER_LEN + max_body) + 64;
            assert!(
                buf.capacity() <= bound,
                "capacity {} after {fed} bytes with a limit of {max_body}",
                buf.capacity()
            );
            match got {
                Ok(Some(p)) => {
                    assert!(
                        before - buf.len() >= HEADER_LEN,
                        "a packet consumed nothing"
                    );
                    packets.push(p);
                }
                Ok(None) => break,
                Err(_) => return (packets, End::Refused),
            }
        }
    }
    (packets, End::NeedMore(buf.len()))
}

/// `bytes` cut at `cuts` (offsets, any order, any value).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        chunks.push(&bytes[from..c]);
        from = c;
    }
    chunks
}

/// The checks every stream gets: the same outcome whole, cut at `cuts` and byte by byte.
fn check_stream(bytes: &[u8], max_body: usize, cuts: &[usize]) -> (Vec<Packet>, End) {
    let whole = decode_chunks(&[bytes], max_body);
    let cut = decode_chunks(&split(bytes, cuts), max_body);
    assert_eq!(cut, whole, "cut at {cuts:?}");
    if bytes.len() <= 4096 {
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&singles, max_body), whole, "byte by byte");
    }
    whole
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    PacketCodec::new(DEFAULT_MAX_BODY)
        .encode_ref(p, &mut buf)
        .unwrap();
    buf.to_vec()
}

fn kinds() -> Vec<PacketType> {
    PacketType::KNOWN
        .iter()
        .copied()
        .chain([
            PacketType::Unknown(0),
            PacketType::Unknown(4242),
            PacketType::Unknown(u32::MAX),
        ])
        .collect()
}

/// A packet the encoder accepts: the type's arity, NUL only in the last argument.
fn arb_packet() -> impl Strategy<Value = Packet> {
    (
        prop::sample::select(kinds()),
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(1u8..=255, 0..16), 8),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, req, inner, last)| {
            let mut args: Vec<Bytes> = inner
                .into_iter()
                .take(kind.arity().saturating_sub(1))
                .map(Bytes::from)
                .collect();
            if kind.arity() > 0 {
                args.push(Bytes::from(last));
            }
            let magic = if req { Magic::Req } else { Magic::Res };
            Packet::new(magic, kind, args)
        })
}

/// Four magic bytes: the two valid ones, near misses, and anything.
fn arb_magic() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![
        prop::sample::select(vec![
            *b"\0REQ",
            *b"\0RES",
            *b"\0REX",
            *b"\0req",
            *b"\0res",
            *b"REQ\0",
            *b"\0\0RE",
            *b"\x00RE\x00",
            *b"\xffRES",
            *b"GET ",
            *b"\x16\x03\x01\x02",
        ]),
        any::<[u8; 4]>(),
    ]
}

/// A piece of a hostile stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed packet.
    Packet(Packet),
    /// A header of any magic, type and claimed length, and a body that may not match it.
    Header([u8; 4], u32, u32, Vec<u8>),
    /// Random bytes.
    Garbage(Vec<u8>),
}

fn arb_length() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..64,
        prop::sample::select(vec![
            255,
            256,
            4096,
            4097,
            1 << 24,
            (1 << 24) + 1,
            u32::MAX - 11,
            u32::MAX
        ]),
        any::<u32>(),
    ]
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => arb_packet().prop_map(Piece::Packet),
        3 => (arb_magic(), prop_oneof![prop::sample::select(kinds()).prop_map(PacketType::code), any::<u32>()],
              arb_length(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(m, c, l, b)| Piece::Header(m, c, l, b)),
        1 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Piece::Garbage),
    ]
}

fn wire(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Packet(p) => out.extend(encode(p)),
            Piece::Header(magic, code, len, body) => {
                out.extend_from_slice(magic);
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(body);
            }
            Piece::Garbage(g) => out.extend_from_slice(g),
        }
    }
    out
}

proptest! {
    #![proptest_config(fuzz::config(256))]

    /// Well-formed packets come out exactly as they went in, wherever the stream is cut.
    #[test]
    fn packets_survive_any_cuts(
        packets in prop::collection::vec(arb_packet(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let bytes: Vec<u8> = packets.iter().flat_map(encode).collect();
        let (got, end) = check_stream(&bytes, DEFAULT_MAX_BODY, &cuts);
        prop_assert_eq!(got, packets);
        prop_assert_eq!(end, End::NeedMore(0));
    }

    /// Any mix of packets, forged headers and garbage: no panic, the same outcome at any cuts,
    /// memory bounded (checked on every call), never more than one packet per 12 bytes.
    #[test]
    fn hostile_streams_are_decoded_the_same_at_any_cuts(
        pieces in prop::collection::vec(arb_piece(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
        max_body in prop_oneof![0usize..128, Just(4096usize)],
    ) {
        let bytes = wire(&pieces);
        let (packets, _) = check_stream(&bytes, max_body, &cuts);
        prop_assert!(packets.len() <= bytes.len() / HEADER_LEN);
        prop_assert!(packets.iter().all(|p| p.body_len() <= max_body));
    }

    /// Random bytes, cut anywhere.
    #[test]
    fn random_bytes_are_decoded_the_same_at_any_cuts(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max_body in 0usize..512,
    ) {
        check_stream(&bytes, max_body, &cuts);
    }

    /// Only the two valid magics are accepted; anything else is refused as soon as the bytes
    /// seen cannot start a valid one.
    #[test]
    fn only_valid_magic_is_accepted(magic in arb_magic(), prefix in 1usize..=4) {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&PacketType::Noop.code().to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        let valid = Magic::from_bytes(&magic).is_some();
        let (packets, end) = check_stream(&bytes, 0, &[]);
        prop_assert_eq!(packets.len(), usize::from(valid));
        prop_assert_eq!(end == End::Refused, !valid);
        // A prefix that cannot start "\0REQ"/"\0RES" is refused at once.
        let head = &magic[..prefix];
        let possible = b"\0REQ".starts_with(head) || b"\0RES".starts_with(head);
        let (_, end) = decode_chunks(&[head], 0);
        prop_assert_eq!(end == End::Refused, !possible);
    }

    /// A claimed length over the limit is refused from the header alone, without growing the
    /// buffer; one within the limit waits for its body.
    #[test]
    fn huge_lengths_are_refused_without_allocating(
        max_body in 0usize..(1 << 20),
        over in 1u64..=u64::from(u32::MAX),
        code in any::<u32>(),
    ) {
        let len = (max_body as u64 + over).min(u64::from(u32::MAX)) as u32;
        prop_assume!(len as usize > max_body);
        let mut header = b"\0RES".to_vec();
        header.extend_from_slice(&code.to_be_bytes());
        header.extend_from_slice(&len.to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        let cap = buf.capacity();
        prop_assert!(PacketCodec::new(max_body).decode(&mut buf).is_err());
        prop_assert_eq!(buf.capacity(), cap);
        let (_, end) = decode_chunks(&[&header], max_body);
        prop_assert_eq!(end, End::Refused);
    }

    /// The encoder refuses what it cannot frame unambiguously and never panics; what it
    /// accepts decodes back to itself.
    #[test]
    fn encoder_accepts_only_what_decodes_back(
        kind in prop::sample::select(kinds()),
        args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..6),
        max_body in 0usize..64,
    ) {
        let packet = Packet::req(kind, args.into_iter().map(Bytes::from).collect());
        let mut codec = PacketCodec::new(max_body);
        let mut buf = BytesMut::new();
        if codec.encode(packet.clone(), &mut buf).is_ok() {
            let back = codec.decode(&mut buf).unwrap().unwrap();
            // An unknown type's arguments come back as one (its arity is not known).
            if matches!(kind, PacketType::Unknown(_)) {
                prop_assert_eq!(back.body_len(), packet.body_len());
            } else {
                prop_assert_eq!(back, packet);
            }
            prop_assert!(buf.is_empty());
        } else {
            prop_assert!(buf.is_empty(), "a refused packet left bytes");
        }
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in fuzz::corpus("codec") {
        let n = bytes.len();
        let cuts = [n / 2, n / 3, HEADER_LEN, 3];
        let (packets, end) = check_stream(&bytes, DEFAULT_MAX_BODY, &cuts);
        let expect = name.split('-').next().unwrap_or_default();
        match expect {
            "ok" => assert_eq!(end, End::NeedMore(0), "{name}: {packets:?}"),
            "err" => assert_eq!(end, End::Refused, "{name}: {packets:?}"),
            "more" => assert!(matches!(end, End::NeedMore(m) if m > 0), "{name}: {end:?}"),
            _ => panic!("{name}: corpus files are named ok-*, err-* or more-*"),
        }
    }
}
