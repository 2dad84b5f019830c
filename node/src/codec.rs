//! The request/response codec: length-prefixed, size-limited frames of [`wire`] messages.
//!
//! A request whose frame arrives whole but does not decode becomes
//! [`Request::Undecodable`], so the receiver can answer with a clear error. A frame that is
//! oversized or truncated cannot be answered on a sound stream, so it fails the stream instead.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use crate::fair::{FairBudget, Share};
use crate::wire::{self, Request, Response, WireError, MAX_FRAME_LEN};

/// Default bound on the bytes of inbound requests held at once, being read or waiting for
/// an answer, across all peers (see [`KuraCodec`]).
pub const INBOUND_BYTES: usize = 64 << 20;

/// Default bound on the bytes of inbound requests read per second, from all peers together.
pub const INBOUND_RATE: u64 = 64 << 20;

/// How much of a frame is read per draw on the inbound budget: the first draw is
/// [`FIRST_PIECE`], and each next one twice the last up to this, so a frame announced and
/// withheld holds little of the budget (a thousand such streams hold 4 MiB, not 64). A frame
/// longer than this draws all the rest after its first piece.
const PIECE: usize = 64 << 10;
const FIRST_PIECE: usize = 4 << 10;
/// Every inbound frame may take this long, plus its length at [`MIN_READ_RATE`].
const READ_GRACE: Duration = Duration::from_secs(10);
/// The slowest rate, in bytes per second, at which an inbound frame may arrive after the grace.
const MIN_READ_RATE: usize = 64 << 10;

/// Codec for [`wire::REQUEST_PROTOCOL`].
///
/// Inbound requests draw on one shared byte budget as their bytes arrive, and give it back only
/// when answered (the share travels in the [`Envelope`]). Many streams of maximal frames from
/// any number of peers therefore hold at most the budget in memory; streams past it wait for
/// room, and a frame that does not arrive at [`MIN_READ_RATE`] after [`READ_GRACE`] fails, so
/// a slow sender cannot hold its share for long. Waiting draws are served fairly between
/// connections ([`FairBudget`]): a connection holding little goes first, so streams of
/// maximal frames from many fresh identities do not starve an honest peer's request.
///
/// Each connection reads with its own clone: libp2p's request-response behaviour clones its
/// codec for each connection's handler, and the handler clones that one for each stream. So a
/// clone of the codec the behaviour holds (which has no connection) is a new connection, and a
/// clone of a connection's codec is the same connection.
#[derive(Debug)]
pub struct KuraCodec {
    inbound: Arc<FairBudget>,
    conn: Option<u64>,
}

impl Clone for KuraCodec {
    fn clone(&self) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let conn = self.conn.or_else(|| Some(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        KuraCodec { inbound: self.inbound.clone(), conn }
    }
}

impl KuraCodec {
    /// A codec whose inbound requests hold at most `inbound_bytes` (at least one maximal frame).
    pub fn new(inbound_bytes: usize) -> Self {
        KuraCodec::with_rate(inbound_bytes, None)
    }

    /// [`KuraCodec::new`], reading at most `rate` bytes a second from all connections together.
    pub fn with_rate(inbound_bytes: usize, rate: Option<u64>) -> Self {
        KuraCodec { inbound: FairBudget::with_rate(inbound_bytes.max(MAX_FRAME_LEN), rate), conn: None }
    }
}

impl Default for KuraCodec {
    fn default() -> Self {
        KuraCodec::new(INBOUND_BYTES)
    }
}

/// A request with, for an inbound one, its share of the codec's byte budget (released on drop).
#[derive(Debug)]
pub struct Envelope {
    /// The request.
    pub request: Request,
    /// The budget its bytes hold while it is read, queued and answered.
    pub permit: Option<Share>,
}

impl From<Request> for Envelope {
    fn from(request: Request) -> Self {
        Envelope { request, permit: None }
    }
}

/// Reads a frame's length, refusing lengths over [`MAX_FRAME_LEN`] before reading any body.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::Oversized {
                len: len as u64,
                max: MAX_FRAME_LEN as u64,
            },
        ));
    }
    Ok(len)
}

/// Reads one frame body, refusing lengths over [`MAX_FRAME_LEN`] before reading any of it.
///
/// The buffer grows as bytes arrive rather than being allocated from the length field, so a
/// peer that announces maximal frames and then sends little holds only what it sent.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let len = read_len(io).await?;
    read_body(io, len).await
}

async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < len {
        let piece = (len - body.len()).min(PIECE);
        read_piece(io, &mut body, piece, len).await?;
    }
    Ok(body)
}

/// Appends exactly `piece` bytes of a `len`-byte frame to `body`. The buffer doubles as it
/// fills (one copy of the frame in all) and only the new piece is zeroed before the read
/// (`read_to_end` zeroed all spare capacity each time it grew, and grew from 32 bytes).
async fn read_piece<T: AsyncRead + Unpin + Send>(io: &mut T, body: &mut Vec<u8>, piece: usize, len: usize) -> io::Result<()> {
    let at = body.len();
    body.resize(at + piece, 0);
    if let Err(e) = io.read_exact(&mut body[at..]).await {
        body.truncate(at);
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                io::Error::new(io::ErrorKind::UnexpectedEof, format!("frame ended within bytes {at}..{} of {len}", at + piece))
            }
            _ => e,
        });
    }
    Ok(())
}

/// Writes one frame: length then body.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[async_trait::async_trait]
impl request_response::Codec for KuraCodec {
    type Protocol = StreamProtocol;
    type Request = Envelope;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io).await?;
        // A frame must arrive at a minimum rate, so a slow sender holds its share of the budget
        // only for a bounded time. Only the time spent reading counts: waiting for this node's
        // own budget (its turn under a flood) is not the sender's slowness.
        let mut allowance = READ_GRACE + Duration::from_secs_f64(len as f64 / MIN_READ_RATE as f64);
        let too_slow = || io::Error::new(io::ErrorKind::TimedOut, format!("frame of {len} bytes arrived too slowly"));
        // The budget is drawn a piece at a time, just before the piece is read: a peer that
        // announces a large frame and sends little holds only what it sent.
        let mut body = Vec::new();
        let conn = self.conn.unwrap_or(0);
        // One byte more than the length, so that empty frames count too.
        let mut held = self.inbound.acquire(conn, 1).await;
        let mut next = FIRST_PIECE;
        while body.len() < len {
            // Past its first piece a large frame draws all the rest at once: frames read a
            // piece at a time in turn could together hold the whole budget with none of them
            // whole, and wait for one another until their deadlines. One that holds all it
            // needs finishes as fast as its sender sends.
            let piece = match body.len() >= FIRST_PIECE && len > PIECE {
                true => len - body.len(),
                false => (len - body.len()).min(next),
            };
            held.merge(self.inbound.acquire(conn, piece).await);
            let started = tokio::time::Instant::now();
            tokio::time::timeout(allowance, read_piece(&mut *io, &mut body, piece, len)).await.map_err(|_| too_slow())??;
            allowance = allowance.checked_sub(started.elapsed()).ok_or_else(too_slow)?;
            next = (next * 2).min(PIECE);
        }
        let permit = Some(held);
        let request = wire::decode(&body).unwrap_or_else(Request::Undecodable);
        Ok(Envelope { request, permit })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io).await?;
        wire::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Envelope) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &wire::encode(&req.request).map_err(invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &wire::encode(&res).map_err(invalid)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    fn proto() -> StreamProtocol {
        StreamProtocol::new(wire::REQUEST_PROTOCOL)
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn garbage_body_becomes_undecodable_request() {
        let mut io = Cursor::new(framed(&[wire::WIRE_VERSION, 0xff, 0xfe, 0x07]));
        let req = KuraCodec::default().read_request(&proto(), &mut io).await.unwrap().request;
        assert!(matches!(req, Request::Undecodable(WireError::Body(_))));
    }

    #[tokio::test]
    async fn unknown_version_becomes_undecodable_request() {
        let mut io = Cursor::new(framed(&[42, 0]));
        let req = KuraCodec::default().read_request(&proto(), &mut io).await.unwrap().request;
        assert_eq!(
            req,
            Request::Undecodable(WireError::UnsupportedVersion { got: 42, supported: wire::WIRE_VERSION })
        );
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_unread() {
        let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut io = Cursor::new(bytes);
        let err = KuraCodec::default().read_request(&proto(), &mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io.position(), 4, "nothing past the length was read");
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut bytes = framed(&wire::encode(&Request::Ping).unwrap());
        bytes[3] += 5; // announce more than is sent
        let err = KuraCodec::default()
            .read_request(&proto(), &mut Cursor::new(bytes))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Yields its bytes, then never anything more (a peer that stalls mid-frame).
    struct Stall(Vec<u8>, usize);

    impl AsyncRead for Stall {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.0.len() - self.1);
            if n == 0 {
                return std::task::Poll::Pending;
            }
            let at = self.1;
            buf[..n].copy_from_slice(&self.0[at..at + n]);
            self.1 += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[tokio::test]
    async fn a_large_announced_frame_holds_only_what_arrives() {
        let codec = KuraCodec::default();
        let mut bytes = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 100]);
        let reader = {
            let mut codec = codec.clone();
            tokio::spawn(async move { codec.read_request(&proto(), &mut Stall(bytes, 0)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let held = INBOUND_BYTES - codec.inbound.available();
        assert!(held <= 2 * FIRST_PIECE + 1, "a stalled 8 MiB frame holds {held} bytes of the budget");
        reader.abort();
        let _ = reader.await;
        assert_eq!(codec.inbound.available(), INBOUND_BYTES, "given back when the stream goes");
    }

    #[tokio::test]
    async fn inbound_requests_hold_their_bytes_of_the_budget_until_dropped() {
        let mut codec = KuraCodec::new(MAX_FRAME_LEN);
        let big = vec![wire::WIRE_VERSION; MAX_FRAME_LEN - 2];
        let held = codec.read_request(&proto(), &mut Cursor::new(framed(&big))).await.unwrap();
        assert_eq!(codec.inbound.available(), 1, "the request holds its bytes until answered");
        let small = framed(&wire::encode(&Request::Ping).unwrap());
        let (mut other, p) = (codec.clone(), proto());
        let waiting = tokio::spawn(async move { other.read_request(&p, &mut Cursor::new(small)).await.map(|e| e.request) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a frame that does not fit waits for the budget");
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), Request::Ping, "and is read once room is made");
        assert_eq!(codec.inbound.available(), MAX_FRAME_LEN);
    }

    #[tokio::test]
    async fn write_then_read_round_trips() {
        let mut buf = Cursor::new(Vec::new());
        KuraCodec::default().write_response(&proto(), &mut buf, Response::Pong).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(KuraCodec::default().read_response(&proto(), &mut rd).await.unwrap(), Response::Pong);
    }
}
