//! Errors, one enum per operation (crossbeam-channel style): every send error hands the
//! message back, every message says what happened and what to do about it.

use std::fmt;
use std::time::Duration;

/// Shared memory failed validation: an index, length or state read from the segment is
/// impossible. The segment was written by a buggy or hostile process, or torn by a crash.
/// shmq stops using the part it could not trust; nothing is read out of bounds.
///
/// ```
/// # fn demo(e: shmq::Corrupt) { eprintln!("{e}"); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shmq segment is corrupt ({detail}); stop using it, and remove it once no process needs its data")]
pub struct Corrupt {
    detail: String,
}

impl Corrupt {
    pub(crate) fn new(detail: impl Into<String>) -> Corrupt {
        Corrupt { detail: detail.into() }
    }

    /// What exactly was found wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// A process that was attached to a channel and died without detaching (killed, or exited
/// without dropping its handles), as found in the channel's peer table.
///
/// ```
/// let p = shmq::DeadPeer { pid: 4242, start_time: 1234, was_sender: true };
/// assert_eq!(p.to_string(), "sender pid 4242 (started at tick 1234)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeadPeer {
    /// Its process id (the process is gone; the number may already belong to another one).
    pub pid: u32,
    /// The start time of the dead process (clock ticks since boot), which tells it apart from a
    /// later process with the same pid.
    pub start_time: u64,
    /// Whether it was attached as a sender (else as a receiver).
    pub was_sender: bool,
}

impl fmt::Display for DeadPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.was_sender { "sender" } else { "receiver" };
        write!(f, "{role} pid {} (started at tick {})", self.pid, self.start_time)
    }
}

macro_rules! hand_back {
    ($ty:ident { $($var:ident),* } corrupt) => {
        impl<M> $ty<M> {
            /// The message that was not sent.
            pub fn into_inner(self) -> M {
                match self {
                    $($ty::$var(m) => m,)*
                    $ty::Corrupt(m, _) => m,
                    $ty::PeerDead(m, _) => m,
                }
            }
        }
        impl<M> fmt::Debug for $ty<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($ty::$var(_) => write!(f, concat!(stringify!($ty), "::", stringify!($var), "(..)")),)*
                    $ty::Corrupt(_, c) => write!(f, concat!(stringify!($ty), "::Corrupt(.., {:?})"), c),
                    $ty::PeerDead(_, p) => write!(f, concat!(stringify!($ty), "::PeerDead(.., {:?})"), p),
                }
            }
        }
        impl<M> std::error::Error for $ty<M> {}
        impl<M> $ty<M> {
            /// `Closed`, or `PeerDead` if the channel was closed because the receiving side died.
            pub(crate) fn closed_or_dead(m: M, dead: Option<DeadPeer>) -> Self {
                match dead {
                    Some(p) => $ty::PeerDead(m, p),
                    None => $ty::Closed(m),
                }
            }
            /// True for `PeerDead`.
            pub fn is_peer_dead(&self) -> bool {
                matches!(self, $ty::PeerDead(..))
            }
        }
    };
}

/// Why [`Sender::send`](crate::Sender::send) refused a message. The message comes back.
///
/// ```
/// let e: shmq::SendError<Vec<u8>> = shmq::SendError::Closed(b"hi".to_vec());
/// assert_eq!(e.into_inner(), b"hi");
/// ```
pub enum SendError<M> {
    /// The channel is closed (DRAINING, CLOSING or CLOSED): nobody will receive it.
    Closed(M),
    /// The message is longer than the channel's `max_message`.
    TooLarge(M),
    /// The segment is corrupt.
    Corrupt(M, Corrupt),
    /// The channel is closed because every receiver died (killed, or exited without closing):
    /// nobody will receive it. Says which process.
    PeerDead(M, DeadPeer),
}
hand_back!(SendError { Closed, TooLarge } corrupt);

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("send refused: the channel is closed (the message is handed back)"),
            SendError::TooLarge(_) => f.write_str("send refused: message longer than the channel's max_message (create the channel with a larger Config::max_message)"),
            SendError::Corrupt(_, c) => write!(f, "send refused: {c}"),
            SendError::PeerDead(_, p) => write!(f, "send refused: the receiving side is dead ({p}); the message is handed back"),
        }
    }
}

/// Why [`Sender::try_send`](crate::Sender::try_send) refused a message. The message comes back.
///
/// ```
/// let e = shmq::TrySendError::Full(vec![1u8]);
/// assert!(e.is_full());
/// ```
pub enum TrySendError<M> {
    /// No room right now; try again later or use a blocking form.
    Full(M),
    /// The channel is closed: nobody will receive it.
    Closed(M),
    /// The message is longer than the channel's `max_message`.
    TooLarge(M),
    /// The segment is corrupt.
    Corrupt(M, Corrupt),
    /// The channel is closed because every receiver died (killed, or exited without closing):
    /// nobody will receive it. Says which process.
    PeerDead(M, DeadPeer),
}
hand_back!(TrySendError { Full, Closed, TooLarge } corrupt);

impl<M> TrySendError<M> {
    /// True for `Full`.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
    /// True for `Closed`.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

impl<M> fmt::Display for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => {
                f.write_str("send would block: the ring is full (retry, or use send / send_timeout)")
            }
            TrySendError::Closed(_) => f.write_str("send refused: the channel is closed (the message is handed back)"),
            TrySendError::TooLarge(_) => f.write_str("send refused: message longer than the channel's max_message"),
            TrySendError::Corrupt(_, c) => write!(f, "send refused: {c}"),
            TrySendError::PeerDead(_, p) => {
                write!(f, "send refused: the receiving side is dead ({p}); the message is handed back")
            }
        }
    }
}

/// Why [`Sender::send_timeout`](crate::Sender::send_timeout) refused a message.
///
/// ```
/// let e = shmq::SendTimeoutError::Timeout(vec![1u8]);
/// assert!(e.is_timeout());
/// ```
pub enum SendTimeoutError<M> {
    /// The deadline passed before there was room. Nothing of the message was delivered.
    Timeout(M),
    /// The channel is closed: nobody will receive it.
    Closed(M),
    /// The message is longer than the channel's `max_message`.
    TooLarge(M),
    /// The segment is corrupt.
    Corrupt(M, Corrupt),
    /// The channel is closed because every receiver died (killed, or exited without closing):
    /// nobody will receive it. Says which process.
    PeerDead(M, DeadPeer),
}
hand_back!(SendTimeoutError { Timeout, Closed, TooLarge } corrupt);

impl<M> SendTimeoutError<M> {
    /// True for `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }
    /// True for `Closed`.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendTimeoutError::Closed(_))
    }
}

impl<M> fmt::Display for SendTimeoutError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => {
                f.write_str("send timed out: the ring stayed full (is the receiver keeping up?)")
            }
            SendTimeoutError::Closed(_) => {
                f.write_str("send refused: the channel is closed (the message is handed back)")
            }
            SendTimeoutError::TooLarge(_) => f.write_str("send refused: message longer than the channel's max_message"),
            SendTimeoutError::Corrupt(_, c) => write!(f, "send refused: {c}"),
            SendTimeoutError::PeerDead(_, p) => {
                write!(f, "send refused: the receiving side is dead ({p}); the message is handed back")
            }
        }
    }
}

/// Why a blocking receive returned no message.
///
/// ```
/// assert_eq!(shmq::RecvError::Closed.to_string(), "end of stream: the channel is closed and every message sent before the close was delivered");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// End of stream: the channel was closed and everything that will ever arrive has arrived.
    #[error("end of stream: the channel is closed and every message sent before the close was delivered")]
    Closed,
    /// The segment is corrupt.
    #[error("receive failed: {0}")]
    Corrupt(#[from] Corrupt),
    /// End of stream because every sender died (killed, or exited without closing); every
    /// message committed before was delivered. Says which process.
    #[error("end of stream: the sending side died ({0}); every message it committed was delivered")]
    PeerDead(DeadPeer),
}

impl RecvError {
    /// `Closed`, or `PeerDead` if the stream ended because the sending side died.
    pub(crate) fn closed_or_dead(dead: Option<DeadPeer>) -> Self {
        match dead {
            Some(p) => RecvError::PeerDead(p),
            None => RecvError::Closed,
        }
    }
    /// True for `PeerDead`.
    pub fn is_peer_dead(&self) -> bool {
        matches!(self, RecvError::PeerDead(_))
    }
}

/// Why [`Receiver::try_recv`](crate::Receiver::try_recv) returned no message.
///
/// ```
/// assert!(shmq::TryRecvError::Empty.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing to receive right now.
    #[error("nothing to receive yet (retry, or use recv / recv_timeout)")]
    Empty,
    /// End of stream (see [`RecvError::Closed`]).
    #[error("end of stream: the channel is closed and every message sent before the close was delivered")]
    Closed,
    /// The segment is corrupt.
    #[error("receive failed: {0}")]
    Corrupt(#[from] Corrupt),
    /// End of stream because every sender died (killed, or exited without closing); every
    /// message committed before was delivered. Says which process.
    #[error("end of stream: the sending side died ({0}); every message it committed was delivered")]
    PeerDead(DeadPeer),
}

impl TryRecvError {
    /// `Closed`, or `PeerDead` if the stream ended because the sending side died.
    pub(crate) fn closed_or_dead(dead: Option<DeadPeer>) -> Self {
        match dead {
            Some(p) => TryRecvError::PeerDead(p),
            None => TryRecvError::Closed,
        }
    }
    /// True for `PeerDead`.
    pub fn is_peer_dead(&self) -> bool {
        matches!(self, TryRecvError::PeerDead(_))
    }
    /// True for `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
    /// True for `Closed`.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryRecvError::Closed)
    }
}

/// Why [`Receiver::recv_timeout`](crate::Receiver::recv_timeout) returned no message.
///
/// ```
/// assert!(shmq::RecvTimeoutError::Timeout.is_timeout());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// The deadline passed with nothing to receive.
    #[error("receive timed out: nothing arrived before the deadline")]
    Timeout,
    /// End of stream (see [`RecvError::Closed`]).
    #[error("end of stream: the channel is closed and every message sent before the close was delivered")]
    Closed,
    /// The segment is corrupt.
    #[error("receive failed: {0}")]
    Corrupt(#[from] Corrupt),
    /// End of stream because every sender died (killed, or exited without closing); every
    /// message committed before was delivered. Says which process.
    #[error("end of stream: the sending side died ({0}); every message it committed was delivered")]
    PeerDead(DeadPeer),
}

impl RecvTimeoutError {
    /// `Closed`, or `PeerDead` if the stream ended because the sending side died.
    pub(crate) fn closed_or_dead(dead: Option<DeadPeer>) -> Self {
        match dead {
            Some(p) => RecvTimeoutError::PeerDead(p),
            None => RecvTimeoutError::Closed,
        }
    }
    /// True for `PeerDead`.
    pub fn is_peer_dead(&self) -> bool {
        matches!(self, RecvTimeoutError::PeerDead(_))
    }
    /// True for `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
    /// True for `Closed`.
    pub fn is_closed(&self) -> bool {
        matches!(self, RecvTimeoutError::Closed)
    }
}

/// Why creating or opening a segment failed.
///
/// ```
/// let e = shmq::SegmentError::NotFound { name: "jobs".into() };
/// assert!(e.to_string().contains("jobs"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// No segment with that name exists (never created, or already unlinked).
    #[error("no shmq segment named {name:?} (create it first, or check the name)")]
    NotFound {
        /// The segment name as given.
        name: String,
    },
    /// A segment with that name already exists; shmq never replaces a segment in use.
    #[error("a segment named {name:?} already exists (open it, or remove it if it is stale)")]
    AlreadyExists {
        /// The segment name as given.
        name: String,
    },
    /// The segment exists but its creator has not published the header within the wait.
    #[error("segment {name:?} was not initialised within {waited:?} (creator still starting, or it died half way)")]
    NotInitialized {
        /// The segment name as given.
        name: String,
        /// How long the opener waited.
        waited: Duration,
    },
    /// The segment was made by a shmq with another layout version.
    #[error(
        "segment layout version {found}, this shmq reads version {expected} (use matching shmq versions on both sides)"
    )]
    VersionMismatch {
        /// Found in the segment.
        found: u32,
        /// What this build expects.
        expected: u32,
    },
    /// The segment was made by a build with other ABI facts (pointer width, byte order, line size).
    #[error(
        "segment ABI word {found:#x} differs from this build's {expected:#x} (different architecture or build settings)"
    )]
    AbiMismatch {
        /// Found in the segment.
        found: u32,
        /// What this build expects.
        expected: u32,
    },
    /// The file is shorter or longer than its header says (truncated, or not a shmq segment).
    #[error("segment is {actual} bytes but its header says {expected}")]
    SizeMismatch {
        /// Size the header records.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The segment holds another flavour of channel than the one asked for (for example an MPSC
    /// segment opened with `shmq::Channel::open`).
    #[error("segment holds an {found} channel, not {expected} (open it with the {found} channel type)")]
    WrongFlavor {
        /// The flavour asked for ("spsc", "mpsc", "mpmc").
        expected: &'static str,
        /// The flavour found in the segment.
        found: &'static str,
    },
    /// The header or the ring indices are inconsistent.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The segment belongs to another user (segments are created with mode 0600).
    #[error("permission denied opening segment {name:?} (it is private to the user that created it)")]
    PermissionDenied {
        /// The segment name as given.
        name: String,
    },
    /// /dev/shm (or the memfd's tmpfs) has no room for the segment.
    #[error(
        "no space for a {requested}-byte segment in /dev/shm (free space, or raise the tmpfs size, e.g. docker --shm-size)"
    )]
    NoSpace {
        /// Bytes the segment needed.
        requested: u64,
    },
    /// The name cannot be used for a POSIX shared memory object.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The segment name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configuration is impossible (capacity not a power of two, ...).
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(String),
    /// Any other OS error.
    #[error("{op} failed: {source}")]
    Io {
        /// The system call that failed.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why taking the sender or receiver role of a channel failed.
///
/// ```
/// let e = shmq::AttachError::RoleTaken { role: "sender" };
/// assert!(e.to_string().contains("sender"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// An SPSC channel has one sender and one receiver; that role is held by another handle.
    #[error("the {role} of this channel is already attached (an SPSC channel has exactly one)")]
    RoleTaken {
        /// `"sender"` or `"receiver"`.
        role: &'static str,
    },
    /// The segment is corrupt.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}
