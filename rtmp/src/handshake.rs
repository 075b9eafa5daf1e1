//! The plain RTMP handshake (version 3, no digest): C0+C1 → S0+S1 → C2 → S2.
//!
//! C1 is our time, four zero bytes (which tells servers such as nginx-rtmp that
//! we do the simple handshake) and 1528 pseudo-random bytes; C2 echoes S1
//! verbatim, which is what ffmpeg's server checks. S2's content is not checked
//! (servers differ in what they echo).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::RtmpError;

/// Size of C1/C2/S1/S2.
pub const PACKET_SIZE: usize = 1536;

/// The protocol version in C0/S0.
pub const VERSION: u8 = 3;

/// C0 and C1: version byte, `epoch` (ms), zeros, random bytes from `seed`.
pub fn c0c1(epoch: u32, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + PACKET_SIZE);
    out.push(VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut x = seed | 1;
    while out.len() < 1 + PACKET_SIZE {
        // xorshift64*: filler that need not be secret, only not constant.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes());
    }
    out.truncate(1 + PACKET_SIZE);
    out
}

/// Checks S0 (the server's version byte).
pub fn check_s0(version: u8) -> Result<(), RtmpError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(RtmpError::protocol(format!(
            "server answered the handshake with version {version}, not {VERSION}"
        )))
    }
}

/// C2 for a given S1: S1 echoed.
pub fn c2(s1: &[u8; PACKET_SIZE]) -> [u8; PACKET_SIZE] {
    *s1
}

fn io_err(stage: &str, e: std::io::Error) -> RtmpError {
    RtmpError::Closed {
        reason: if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!("the server closed the connection during the handshake ({stage})")
        } else {
            format!("handshake ({stage}): {e}")
        },
    }
}

fn seed() -> (u32, u64) {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let seed = (now.as_nanos() as u64) ^ n ^ u64::from(std::process::id()).rotate_left(32);
    (now.as_millis() as u32, seed)
}

/// The client side of the handshake over `io` (plain TCP or TLS).
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), RtmpError> {
    let (epoch, seed) = seed();
    io.write_all(&c0c1(epoch, seed))
        .await
        .map_err(|e| io_err("C0+C1", e))?;
    io.flush().await.map_err(|e| io_err("C0+C1", e))?;
    let mut s0 = [0u8; 1];
    io.read_exact(&mut s0).await.map_err(|e| io_err("S0", e))?;
    check_s0(s0[0])?;
    let mut s1 = [0u8; PACKET_SIZE];
    io.read_exact(&mut s1).await.map_err(|e| io_err("S1", e))?;
    io.write_all(&c2(&s1)).await.map_err(|e| io_err("C2", e))?;
    io.flush().await.map_err(|e| io_err("C2", e))?;
    let mut s2 = [0u8; PACKET_SIZE];
    io.read_exact(&mut s2).await.map_err(|e| io_err("S2", e))?;
    Ok(())
}

/// The server side (for test servers and tools): reads C0+C1, sends S0+S1+S2
/// (S2 echoes C1), reads C2 and returns it.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
) -> Result<[u8; PACKET_SIZE], RtmpError> {
    let mut c0c1 = vec![0u8; 1 + PACKET_SIZE];
    io.read_exact(&mut c0c1)
        .await
        .map_err(|e| io_err("C0+C1", e))?;
    check_s0(c0c1[0])?;
    let (epoch, seed) = seed();
    let mut reply = self::c0c1(epoch, seed);
    reply.extend_from_slice(&c0c1[1..]);
    io.write_all(&reply)
        .await
        .map_err(|e| io_err("S0+S1+S2", e))?;
    io.flush().await.map_err(|e| io_err("S0+S1+S2", e))?;
    let mut c2 = [0u8; PACKET_SIZE];
    io.read_exact(&mut c2).await.map_err(|e| io_err("C2", e))?;
    Ok(c2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn c1_layout() {
        let c = c0c1(0x0102_0304, 42);
        assert_eq!(c.len(), 1537);
        assert_eq!(&c[..9], &[3, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_ne!(
            c0c1(0, 1)[9..],
            c0c1(0, 2)[9..],
            "random part depends on the seed"
        );
        assert!(check_s0(3).is_ok());
        assert_eq!(check_s0(6).unwrap_err().kind(), ErrorKind::Protocol);
    }

    #[tokio::test]
    async fn client_and_server_agree() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let server = tokio::spawn(async move {
            let mut s = [0u8; PACKET_SIZE];
            // Remember S1 as the server sends it: C2 must echo it.
            let c2 = super::server(&mut b).await.unwrap();
            s.copy_from_slice(&c2);
            s
        });
        client(&mut a).await.unwrap();
        let c2 = server.await.unwrap();
        assert_eq!(c2.len(), PACKET_SIZE);
    }

    #[tokio::test]
    async fn c2_echoes_s1() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let fake = tokio::spawn(async move {
            let mut c0c1 = vec![0u8; 1537];
            b.read_exact(&mut c0c1).await.unwrap();
            let s0s1 = super::c0c1(7, 99);
            b.write_all(&s0s1).await.unwrap();
            b.write_all(&c0c1[1..]).await.unwrap();
            let mut c2 = vec![0u8; PACKET_SIZE];
            b.read_exact(&mut c2).await.unwrap();
            (s0s1, c2)
        });
        client(&mut a).await.unwrap();
        let (s0s1, c2) = fake.await.unwrap();
        assert_eq!(&s0s1[1..], &c2[..]);
    }

    #[tokio::test]
    async fn eof_and_wrong_version() {
        let (mut a, b) = tokio::io::duplex(8192);
        drop(b);
        assert_eq!(client(&mut a).await.unwrap_err().kind(), ErrorKind::Closed);

        let (mut a, mut b) = tokio::io::duplex(8192);
        tokio::spawn(async move {
            let mut c0c1 = vec![0u8; 1537];
            b.read_exact(&mut c0c1).await.unwrap();
            b.write_all(&[6u8; 1537]).await.unwrap();
            let _ = b.read(&mut [0u8; 1]).await;
        });
        assert_eq!(
            client(&mut a).await.unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }
}
