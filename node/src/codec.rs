//! The request/response codec: length-prefixed, size-limited frames of [`wire`] messages.
//!
//! A request whose frame arrives whole but does not decode becomes
//! [`Request::Undecodable`], so the receiver can answer with a clear error. A frame that is
//! oversized or truncated cannot be answered on a sound stream, so it fails the stream instead.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

use crate::wire::{self, Request, Response, WireError, MAX_FRAME_LEN};

/// Codec for [`wire::REQUEST_PROTOCOL`].
#[derive(Debug, Clone, Default)]
pub struct KuraCodec;

/// Reads one frame body, refusing lengths over [`MAX_FRAME_LEN`] before reading any of it.
///
/// The buffer grows as bytes arrive rather than being allocated from the length field, so a
/// peer that announces maximal frames on many streams and then sends little holds only what
/// it sent.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
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
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io).await?;
        Ok(wire::decode(&body).unwrap_or_else(Request::Undecodable))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io).await?;
        wire::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &wire::encode(&req).map_err(invalid)?).await
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
        let req = KuraCodec.read_request(&proto(), &mut io).await.unwrap();
        assert!(matches!(req, Request::Undecodable(WireError::Body(_))));
    }

    #[tokio::test]
    async fn unknown_version_becomes_undecodable_request() {
        let mut io = Cursor::new(framed(&[42, 0]));
        let req = KuraCodec.read_request(&proto(), &mut io).await.unwrap();
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
        let err = KuraCodec.read_request(&proto(), &mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io.position(), 4, "nothing past the length was read");
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut bytes = framed(&wire::encode(&Request::Ping).unwrap());
        bytes[3] += 5; // announce more than is sent
        let err = KuraCodec
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
    async fn write_then_read_round_trips() {
        let mut buf = Cursor::new(Vec::new());
        KuraCodec.write_response(&proto(), &mut buf, Response::Pong).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(KuraCodec.read_response(&proto(), &mut rd).await.unwrap(), Response::Pong);
    }
}
