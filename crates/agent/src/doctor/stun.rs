//! A minimal STUN/TURN client for `vdesk-agent doctor` (RFC 5389 / RFC 5766, UDP only): a
//! Binding request to a STUN server (which address it sees us as), and a TURN Allocate with the
//! long-term credentials the agent would use (MESSAGE-INTEGRITY, key MD5(user:realm:password)),
//! released again at once with a Refresh of lifetime 0. Malformed answers are errors, never
//! panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use tokio::net::UdpSocket;

const MAGIC: u32 = 0x2112_A442;
const BINDING: u16 = 0x0001;
const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const MAPPED_ADDRESS: u16 = 0x0001;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000D;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Tries per request (UDP may lose one), and how long each waits.
const TRIES: u32 = 3;
const WAIT: Duration = Duration::from_millis(1000);

/// A STUN message: type, transaction id and attributes (type, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub txid: [u8; 12],
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Message {
    fn new(kind: u16) -> Self {
        Self {
            kind,
            txid: rand_txid(),
            attrs: Vec::new(),
        }
    }

    fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    /// The wire bytes; with `key`, a MESSAGE-INTEGRITY attribute is appended.
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in &self.attrs {
            push_attr(&mut body, *t, v);
        }
        let mut out = header(self.kind, body.len() + key.map_or(0, |_| 24), &self.txid);
        out.extend_from_slice(&body);
        if let Some(key) = key {
            // The HMAC covers the message up to the attribute, with the length already
            // counting it (RFC 5389 15.4).
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
                return out;
            };
            mac.update(&out);
            let tag = mac.finalize().into_bytes();
            push_attr(&mut out, MESSAGE_INTEGRITY, &tag);
        }
        out
    }

    /// Parses one message; `None` if it is not STUN.
    pub fn decode(buf: &[u8]) -> Option<Message> {
        if buf.len() < 20 || buf[0] & 0xC0 != 0 {
            return None;
        }
        let kind = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC || buf.len() < 20 + len {
            return None;
        }
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&buf[8..20]);
        let mut attrs = Vec::new();
        let mut rest = &buf[20..20 + len];
        while rest.len() >= 4 {
            let t = u16::from_be_bytes([rest[0], rest[1]]);
            let l = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let padded = (l + 3) & !3;
            if rest.len() < 4 + l {
                return None;
            }
            attrs.push((t, rest[4..4 + l].to_vec()));
            rest = rest.get(4 + padded..).unwrap_or(&[]);
        }
        Some(Message { kind, txid, attrs })
    }

    /// The ERROR-CODE as (number, reason), e.g. (401, "Unauthorized").
    pub fn error(&self) -> Option<(u16, String)> {
        let v = self.attr(ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    /// An (XOR-)address attribute.
    fn address(&self, t: u16) -> Option<SocketAddr> {
        let v = self.attr(t)?;
        let xor = t != MAPPED_ADDRESS;
        if v.len() < 8 {
            return None;
        }
        let mut port = u16::from_be_bytes([v[2], v[3]]);
        if xor {
            port ^= (MAGIC >> 16) as u16;
        }
        let ip = match (v[1], v.len()) {
            (1, 8) => {
                let mut a = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
                if xor {
                    a ^= MAGIC;
                }
                IpAddr::V4(Ipv4Addr::from(a))
            }
            (2, 20) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&v[4..20]);
                if xor {
                    let mut mask = MAGIC.to_be_bytes().to_vec();
                    mask.extend_from_slice(&self.txid);
                    for (b, m) in a.iter_mut().zip(mask) {
                        *b ^= m;
                    }
                }
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }
}

fn header(kind: u16, len: usize, txid: &[u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + len);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(txid);
    out
}

fn push_attr(out: &mut Vec<u8>, t: u16, v: &[u8]) {
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&u16::try_from(v.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(v);
    out.resize(out.len() + ((4 - v.len() % 4) % 4), 0);
}

fn rand_txid() -> [u8; 12] {
    // Uniqueness, not secrecy: the time and a counter are enough for a diagnostic client.
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&t.to_be_bytes());
    id[8..].copy_from_slice(&(n ^ std::process::id()).to_be_bytes());
    id
}

/// Sends `msg` to `server` and waits for the answer with its transaction id (retrying).
async fn exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    msg: &Message,
    key: Option<&[u8]>,
) -> Result<Message, String> {
    let bytes = msg.encode(key);
    let mut buf = vec![0u8; 2048];
    for _ in 0..TRIES {
        sock.send_to(&bytes, server)
            .await
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(format!("receiving from {server}: {e}")),
                Ok(Ok((n, from))) => {
                    if from != server {
                        continue;
                    }
                    if let Some(m) = Message::decode(&buf[..n]) {
                        if m.txid == msg.txid {
                            return Ok(m);
                        }
                    }
                }
            }
        }
    }
    Err(format!(
        "no answer from {server} (UDP) in {} s",
        TRIES * WAIT.as_millis() as u32 / 1000
    ))
}

async fn socket_for(server: SocketAddr) -> Result<UdpSocket, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP socket: {e}"))
}

/// A STUN Binding request: the address the server sees (our server-reflexive address).
pub async fn binding(server: SocketAddr) -> Result<SocketAddr, String> {
    let sock = socket_for(server).await?;
    let answer = exchange(&sock, server, &Message::new(BINDING), None).await?;
    match answer.kind {
        k if k == BINDING | SUCCESS => answer
            .address(XOR_MAPPED_ADDRESS)
            .or_else(|| answer.address(MAPPED_ADDRESS))
            .ok_or_else(|| "the answer has no mapped address".to_owned()),
        k if k == BINDING | ERROR => Err(format!(
            "binding refused: {}",
            answer
                .error()
                .map(|(c, r)| format!("{c} {r}"))
                .unwrap_or_default()
        )),
        k => Err(format!("unexpected STUN message type {k:#06x}")),
    }
}

/// Why a TURN allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnError {
    /// The server refused the credentials (401 after authenticating).
    Credentials(String),
    /// No answer, or another failure.
    Other(String),
}

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnError::Credentials(s) | TurnError::Other(s) => f.write_str(s),
        }
    }
}

/// A TURN Allocate (UDP relay) with long-term credentials; on success returns the relayed
/// address, after releasing the allocation (Refresh, lifetime 0).
pub async fn allocate(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> Result<SocketAddr, TurnError> {
    let other = TurnError::Other;
    let sock = socket_for(server).await.map_err(other)?;
    let transport = (u32::from(17u8) << 24).to_be_bytes().to_vec(); // UDP
    let mut first = Message::new(ALLOCATE);
    first.attrs.push((REQUESTED_TRANSPORT, transport.clone()));
    let answer = exchange(&sock, server, &first, None).await.map_err(other)?;
    let challenge = match (answer.kind, answer.error()) {
        (k, _) if k == ALLOCATE | SUCCESS => {
            return Err(TurnError::Other(
                "the server allocated without asking for credentials (not a TURN server with \
                 long-term credentials?)"
                    .into(),
            ))
        }
        (k, Some((401, _))) if k == ALLOCATE | ERROR => answer,
        (_, Some((code, reason))) => {
            return Err(TurnError::Other(format!(
                "Allocate refused: {code} {reason}"
            )))
        }
        (k, None) => {
            return Err(TurnError::Other(format!(
                "unexpected STUN message type {k:#06x}"
            )))
        }
    };
    let mut nonce = challenge
        .attr(NONCE)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let realm = challenge
        .attr(REALM)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let realm_text = String::from_utf8_lossy(&realm).into_owned();
    let key = Md5::digest(format!("{username}:{realm_text}:{password}").as_bytes()).to_vec();
    let authed = |kind: u16, nonce: &[u8], extra: Vec<(u16, Vec<u8>)>| {
        let mut m = Message::new(kind);
        m.attrs.extend(extra);
        m.attrs.push((USERNAME, username.as_bytes().to_vec()));
        m.attrs.push((REALM, realm.clone()));
        m.attrs.push((NONCE, nonce.to_vec()));
        m
    };
    // Twice at most: a 438 (stale nonce) comes with a fresh one.
    for _ in 0..2 {
        let req = authed(
            ALLOCATE,
            &nonce,
            vec![(REQUESTED_TRANSPORT, transport.clone())],
        );
        let answer = exchange(&sock, server, &req, Some(&key))
            .await
            .map_err(TurnError::Other)?;
        if answer.kind == ALLOCATE | SUCCESS {
            let relayed = answer.address(XOR_RELAYED_ADDRESS).ok_or_else(|| {
                TurnError::Other("the Allocate answer has no relayed address".into())
            })?;
            let release = authed(REFRESH, &nonce, vec![(LIFETIME, vec![0, 0, 0, 0])]);
            let _ = exchange(&sock, server, &release, Some(&key)).await;
            return Ok(relayed);
        }
        match answer.error() {
            Some((438, _)) => {
                nonce = answer.attr(NONCE).map(<[u8]>::to_vec).unwrap_or_default();
            }
            Some((401, reason)) => {
                return Err(TurnError::Credentials(format!(
                    "the server refused the credentials: 401 {reason} (realm {realm_text:?})"
                )))
            }
            Some((code, reason)) => {
                return Err(TurnError::Other(format!(
                    "Allocate refused: {code} {reason}"
                )))
            }
            None => return Err(TurnError::Other("unexpected answer to Allocate".into())),
        }
    }
    Err(TurnError::Other(
        "the server kept saying the nonce is stale".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_garbage() {
        let mut m = Message::new(ALLOCATE);
        m.attrs.push((USERNAME, b"abc".to_vec()));
        let bytes = m.encode(Some(b"key"));
        let back = Message::decode(&bytes).expect("decodes");
        assert_eq!(back.kind, ALLOCATE);
        assert_eq!(back.attr(USERNAME), Some(&b"abc"[..]));
        assert_eq!(back.attr(MESSAGE_INTEGRITY).map(<[u8]>::len), Some(20));
        for cut in 0..bytes.len() {
            let _ = Message::decode(&bytes[..cut]);
        }
        let mut bad = bytes.clone();
        bad[23] = 0xff; // an attribute longer than the message
        assert!(Message::decode(&bad).is_none());
    }

    #[test]
    fn xor_mapped_address_decodes() {
        // RFC 5769 2.2: 192.0.2.1:32853.
        let m = Message {
            kind: BINDING | SUCCESS,
            txid: [0; 12],
            attrs: vec![(
                XOR_MAPPED_ADDRESS,
                vec![0, 1, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43],
            )],
        };
        assert_eq!(
            m.address(XOR_MAPPED_ADDRESS),
            Some("192.0.2.1:32853".parse().expect("addr"))
        );
    }
}
