//! Gearman binary packets: magic, type codes, argument arity and typed constructors.
//!
//! A packet is a 12-byte header (`\0REQ`/`\0RES`, type, body length, both big-endian `u32`) and a
//! body of NUL-separated arguments whose last argument is opaque (it may itself contain NULs).
//! How many arguments a packet has is fixed by its type ([`PacketType::arity`]); that is what
//! lets the decoder split a body correctly.

use std::fmt;

use bytes::Bytes;

/// Length of the fixed packet header.
pub const HEADER_LEN: usize = 12;

/// Default Gearman port.
pub const DEFAULT_PORT: u16 = 4730;

/// Longest job handle gearmand produces or accepts.
pub const MAX_HANDLE_LEN: usize = 64;
/// Longest unique id gearmand accepts.
pub const MAX_UNIQUE_LEN: usize = 64;
/// Longest function name gearmand accepts.
pub const MAX_FUNCTION_LEN: usize = 512;

/// Direction marker of a packet: `\0REQ` (to the server) or `\0RES` (from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `\0REQ`: sent by clients and workers.
    Req,
    /// `\0RES`: sent by the server.
    Res,
}

impl Magic {
    /// The four magic bytes on the wire.
    pub const fn bytes(self) -> [u8; 4] {
        match self {
            Magic::Req => *b"\0REQ",
            Magic::Res => *b"\0RES",
        }
    }

    /// Recognises the four magic bytes, if they are one of the two valid markers.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"\0REQ" => Some(Magic::Req),
            b"\0RES" => Some(Magic::Res),
            _ => None,
        }
    }
}

macro_rules! packet_types {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $arity:literal, $wire:literal; )*) => {
        /// A Gearman packet type. Types this crate does not know decode as [`PacketType::Unknown`]
        /// (with the whole body as one opaque argument) so callers can log and skip them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PacketType {
            $( $(#[$doc])* $name, )*
            /// A type code this crate does not know.
            Unknown(u32),
        }

        impl PacketType {
            /// Every known type, for tests and tables.
            pub const KNOWN: &'static [PacketType] = &[ $( PacketType::$name, )* ];

            /// The numeric code on the wire.
            pub const fn code(self) -> u32 {
                match self {
                    $( PacketType::$name => $code, )*
                    PacketType::Unknown(c) => c,
                }
            }

            /// The type for a numeric code (unknown codes give [`PacketType::Unknown`]).
            pub const fn from_code(code: u32) -> Self {
                match code {
                    $( $code => PacketType::$name, )*
                    other => PacketType::Unknown(other),
                }
            }

            /// How many arguments the body holds. The last one is opaque and may contain NULs.
            /// Unknown types are treated as one opaque argument.
            pub const fn arity(self) -> usize {
                match self {
                    $( PacketType::$name => $arity, )*
                    PacketType::Unknown(_) => 1,
                }
            }

            /// The protocol's name for this type (`CAN_DO`, `JOB_ASSIGN_UNIQ`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $( PacketType::$name => $wire, )*
                    PacketType::Unknown(_) => "UNKNOWN",
                }
            }
        }
    };
}

packet_types! {
    /// `CAN_DO FUNC` (worker → server).
    CanDo = 1, 1, "CAN_DO";
    /// `CANT_DO FUNC` (worker → server).
    CantDo = 2, 1, "CANT_DO";
    /// `RESET_ABILITIES` (worker → server).
    ResetAbilities = 3, 0, "RESET_ABILITIES";
    /// `PRE_SLEEP` (worker → server): wake me with `NOOP` when there is work.
    PreSleep = 4, 0, "PRE_SLEEP";
    /// `NOOP` (server → worker): wake up.
    Noop = 6, 0, "NOOP";
    /// `SUBMIT_JOB FUNC\0UNIQUE\0data` (client → server).
    SubmitJob = 7, 3, "SUBMIT_JOB";
    /// `JOB_CREATED HANDLE` (server → client).
    JobCreated = 8, 1, "JOB_CREATED";
    /// `GRAB_JOB` (worker → server). Ignored by Zuul's server: use `GRAB_JOB_UNIQ`.
    GrabJob = 9, 0, "GRAB_JOB";
    /// `NO_JOB` (server → worker).
    NoJob = 10, 0, "NO_JOB";
    /// `JOB_ASSIGN HANDLE\0FUNC\0data` (server → worker).
    JobAssign = 11, 3, "JOB_ASSIGN";
    /// `WORK_STATUS HANDLE\0NUM\0DEN`.
    WorkStatus = 12, 3, "WORK_STATUS";
    /// `WORK_COMPLETE HANDLE\0data`.
    WorkComplete = 13, 2, "WORK_COMPLETE";
    /// `WORK_FAIL HANDLE`.
    WorkFail = 14, 1, "WORK_FAIL";
    /// `GET_STATUS HANDLE` (client → server).
    GetStatus = 15, 1, "GET_STATUS";
    /// `ECHO_REQ data`.
    EchoReq = 16, 1, "ECHO_REQ";
    /// `ECHO_RES data`.
    EchoRes = 17, 1, "ECHO_RES";
    /// `SUBMIT_JOB_BG FUNC\0UNIQUE\0data` (client → server).
    SubmitJobBg = 18, 3, "SUBMIT_JOB_BG";
    /// `ERROR CODE\0TEXT` (server → any).
    Error = 19, 2, "ERROR";
    /// `STATUS_RES HANDLE\0KNOWN\0RUNNING\0NUM\0DEN` (server → client).
    StatusRes = 20, 5, "STATUS_RES";
    /// `SUBMIT_JOB_HIGH FUNC\0UNIQUE\0data` (client → server).
    SubmitJobHigh = 21, 3, "SUBMIT_JOB_HIGH";
    /// `SET_CLIENT_ID ID`.
    SetClientId = 22, 1, "SET_CLIENT_ID";
    /// `CAN_DO_TIMEOUT FUNC\0ms`. Ignored by Zuul's server: never use it.
    CanDoTimeout = 23, 2, "CAN_DO_TIMEOUT";
    /// `ALL_YOURS` (worker → server).
    AllYours = 24, 0, "ALL_YOURS";
    /// `WORK_EXCEPTION HANDLE\0data`.
    WorkException = 25, 2, "WORK_EXCEPTION";
    /// `OPTION_REQ option`.
    OptionReq = 26, 1, "OPTION_REQ";
    /// `OPTION_RES option`.
    OptionRes = 27, 1, "OPTION_RES";
    /// `WORK_DATA HANDLE\0data`.
    WorkData = 28, 2, "WORK_DATA";
    /// `WORK_WARNING HANDLE\0data`.
    WorkWarning = 29, 2, "WORK_WARNING";
    /// `GRAB_JOB_UNIQ` (worker → server).
    GrabJobUniq = 30, 0, "GRAB_JOB_UNIQ";
    /// `JOB_ASSIGN_UNIQ HANDLE\0FUNC\0UNIQUE\0data` (server → worker).
    JobAssignUniq = 31, 4, "JOB_ASSIGN_UNIQ";
    /// `SUBMIT_JOB_HIGH_BG FUNC\0UNIQUE\0data` (client → server).
    SubmitJobHighBg = 32, 3, "SUBMIT_JOB_HIGH_BG";
    /// `SUBMIT_JOB_LOW FUNC\0UNIQUE\0data` (client → server).
    SubmitJobLow = 33, 3, "SUBMIT_JOB_LOW";
    /// `SUBMIT_JOB_LOW_BG FUNC\0UNIQUE\0data` (client → server).
    SubmitJobLowBg = 34, 3, "SUBMIT_JOB_LOW_BG";
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketType::Unknown(code) => write!(f, "UNKNOWN({code})"),
            known => f.write_str(known.name()),
        }
    }
}

/// One Gearman packet: magic, type and its arguments (already split by the type's arity).
///
/// For a known type, `args.len()` equals [`PacketType::arity`] and only the last argument may
/// contain NUL; the encoder refuses anything else.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// `\0REQ` (to the server) or `\0RES` (from it).
    pub magic: Magic,
    pub kind: PacketType,
    /// Arguments, in order.
    pub args: Vec<Bytes>,
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show short arguments readably; long opaque data only by size.
        struct Arg<'a>(&'a Bytes);
        impl fmt::Debug for Arg<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.0.len() <= 80 {
                    write!(f, "{:?}", String::from_utf8_lossy(self.0))
                } else {
                    write!(f, "<{} bytes>", self.0.len())
                }
            }
        }
        f.debug_struct("Packet")
            .field("magic", &self.magic)
            .field("kind", &self.kind)
            .field("args", &self.args.iter().map(Arg).collect::<Vec<_>>())
            .finish()
    }
}

impl Packet {
    /// A packet with the given magic, type and arguments.
    pub fn new(magic: Magic, kind: PacketType, args: Vec<Bytes>) -> Self {
        Packet { magic, kind, args }
    }

    /// A request (`\0REQ`) packet.
    pub fn req(kind: PacketType, args: Vec<Bytes>) -> Self {
        Packet::new(Magic::Req, kind, args)
    }

    /// A response (`\0RES`) packet.
    pub fn res(kind: PacketType, args: Vec<Bytes>) -> Self {
        Packet::new(Magic::Res, kind, args)
    }

    /// Argument `i`, or an empty slice when missing (the decoder guarantees the arity).
    pub fn arg(&self, i: usize) -> &[u8] {
        self.args.get(i).map(|b| &b[..]).unwrap_or(&[])
    }

    /// Argument `i` as a cheap clone of the underlying buffer.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        self.args.get(i).cloned().unwrap_or_default()
    }

    /// Size of the body this packet encodes to.
    pub fn body_len(&self) -> usize {
        let data: usize = self.args.iter().map(Bytes::len).sum();
        data + self.args.len().saturating_sub(1)
    }

    /// `SET_CLIENT_ID id`.
    pub fn set_client_id(id: impl Into<Bytes>) -> Self {
        Packet::req(PacketType::SetClientId, vec![id.into()])
    }

    /// `CAN_DO function`.
    pub fn can_do(function: impl Into<Bytes>) -> Self {
        Packet::req(PacketType::CanDo, vec![function.into()])
    }

    /// `GRAB_JOB_UNIQ`.
    pub fn grab_job_uniq() -> Self {
        Packet::req(PacketType::GrabJobUniq, Vec::new())
    }

    /// `PRE_SLEEP`.
    pub fn pre_sleep() -> Self {
        Packet::req(PacketType::PreSleep, Vec::new())
    }

    /// `WORK_DATA handle\0data`.
    pub fn work_data(handle: Bytes, data: Bytes) -> Self {
        Packet::req(PacketType::WorkData, vec![handle, data])
    }

    /// `WORK_WARNING handle\0data`.
    pub fn work_warning(handle: Bytes, data: Bytes) -> Self {
        Packet::req(PacketType::WorkWarning, vec![handle, data])
    }

    /// `WORK_STATUS handle\0num\0den` with decimal ASCII numbers.
    pub fn work_status(handle: Bytes, numerator: u64, denominator: u64) -> Self {
        Packet::req(
            PacketType::WorkStatus,
            vec![
                handle,
                Bytes::from(numerator.to_string()),
                Bytes::from(denominator.to_string()),
            ],
        )
    }

    /// `WORK_COMPLETE handle\0data`.
    pub fn work_complete(handle: Bytes, data: Bytes) -> Self {
        Packet::req(PacketType::WorkComplete, vec![handle, data])
    }

    /// `WORK_FAIL handle`.
    pub fn work_fail(handle: Bytes) -> Self {
        Packet::req(PacketType::WorkFail, vec![handle])
    }

    /// `WORK_EXCEPTION handle\0data`.
    pub fn work_exception(handle: Bytes, data: Bytes) -> Self {
        Packet::req(PacketType::WorkException, vec![handle, data])
    }

    /// `SUBMIT_JOB` / `_HIGH` / `_LOW` (`kind` chooses which) `function\0unique\0data`.
    pub fn submit(kind: PacketType, function: Bytes, unique: Bytes, data: Bytes) -> Self {
        Packet::req(kind, vec![function, unique, data])
    }

    /// `GET_STATUS handle`.
    pub fn get_status(handle: Bytes) -> Self {
        Packet::req(PacketType::GetStatus, vec![handle])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for &t in PacketType::KNOWN {
            assert_eq!(PacketType::from_code(t.code()), t);
            assert_ne!(t.name(), "UNKNOWN");
        }
        assert_eq!(PacketType::from_code(5), PacketType::Unknown(5));
        assert_eq!(PacketType::from_code(31), PacketType::JobAssignUniq);
        assert_eq!(PacketType::JobAssignUniq.arity(), 4);
        assert_eq!(PacketType::Unknown(99).to_string(), "UNKNOWN(99)");
        assert_eq!(PacketType::GrabJobUniq.to_string(), "GRAB_JOB_UNIQ");
    }

    #[test]
    fn body_len_counts_separators() {
        let p = Packet::work_data(Bytes::from_static(b"H:1"), Bytes::from_static(b"xy"));
        assert_eq!(p.body_len(), 6);
        assert_eq!(Packet::grab_job_uniq().body_len(), 0);
    }
}
