//! The request/response codec: length-prefixed, size-limited frames of [`wire`] messages.
//!
//! A request whose frame arrives whole but does not decode becomes
//! [`Request::Undecodable`], so the receiver can answer with a clear error. A frame that is
//! oversized or truncated cannot be answered on a sound stream, so it fails the stream instead.

use std::io;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::wire::{self, Request, Response, WireError, MAX_FRAME_LEN};

/// Default bound on the bytes of inbound requests held at once, being read or waiting for
/// an answer, across all peers (see [`KuraCodec`]).
pub const INBOUND_BYTES: usize = 64 << 20;

/// Codec for [`wire::REQUEST_PROTOCOL`].
///
/// Inbound requests draw their frame length from one shared byte budget before their body is
/// read, and give it back only when answered (the permit travels in the [`Envelope`]). Many
/// streams of maximal frames from any number of peers therefore hold at most the budget in
/// memory; excess streams wait, and time out, rather than allocate.
#[derive(Debug, Clone)]
pub struct KuraCodec {
    inbound: Arc<Semaphore>,
}

impl KuraCodec {
    /// A codec whose inbound requests hold at most `inbound_bytes` (at least one maximal frame).
    pub fn new(inbound_bytes: usize) -> Self {
        KuraCodec { inbound: Arc::new(Semaphore::new(inbound_bytes.max(MAX_FRAME_LEN))) }
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
    pub permit: Option<OwnedSemaphorePermit>,
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
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("frame ended after {} of {len} bytes", body.len())));
    }
    Ok(body)
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
        // At least one byte each, so empty frames are counted too; `len` is under
        // MAX_FRAME_LEN, which the budget always covers.
        let permit = self
            .inbound
            .clone()
            .acquire_many_owned(len.max(1) as u32)
            .await
            .map_err(|_| io::Error::other("codec closed"))?;
        let body = read_body(io, len).await?;
        let request = wire::decode(&body).unwrap_or_else(Request::Undecodable);
        Ok(Envelope { request, permit: Some(permit) })
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

    #[tokio::test]
    async fn a_large_announced_frame_allocates_only_what_arrives() {
        let mut bytes = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 100]);
        let mut io = Cursor::new(bytes);
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await.unwrap();
        let mut body = Vec::new();
        let got = (&mut io).take(MAX_FRAME_LEN as u64).read_to_end(&mut body).await.unwrap();
        assert_eq!(got, 100);
        assert!(body.capacity() < 64 << 10, "capacity {} for 100 bytes", body.capacity());
        io.set_position(0);
        let err = read_frame(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn inbound_requests_hold_their_bytes_of_the_budget_until_dropped() {
        let mut codec = KuraCodec::new(MAX_FRAME_LEN);
        let big = wire::encode(&Request::Ping).unwrap();
        let mut first = Cursor::new(framed(&big));
        let held = codec.read_request(&proto(), &mut first).await.unwrap();
        assert_eq!(codec.inbound.available_permits(), MAX_FRAME_LEN - big.len());
        let mut full = ((MAX_FRAME_LEN) as u32).to_be_bytes().to_vec();
        full.extend_from_slice(&[0; 8]);
        let (mut other, p, mut io) = (codec.clone(), proto(), Cursor::new(full));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), other.read_request(&p, &mut io));
        assert!(waiting.await.is_err(), "a frame that does not fit waits for the budget");
        drop(held);
        assert_eq!(codec.inbound.available_permits(), MAX_FRAME_LEN);
    }

    #[tokio::test]
    async fn write_then_read_round_trips() {
        let mut buf = Cursor::new(Vec::new());
        KuraCodec::default().write_response(&proto(), &mut buf, Response::Pong).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(KuraCodec::default().read_response(&proto(), &mut rd).await.unwrap(), Response::Pong);
    }
}
