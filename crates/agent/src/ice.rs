//! Turns the browser-style `RTCIceServer` list the controller hands out into `webrtcbin`'s
//! spelling (`stun://host:port`, `turn://user:pass@host:port?transport=udp`), so both peers use
//! the same servers.

use vdesk_protocol::IceServer;

/// STUN and TURN URIs in webrtcbin form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WebrtcbinIce {
    /// webrtcbin takes a single STUN server; the first one wins.
    pub stun: Option<String>,
    pub turn: Vec<String>,
    /// URLs that could not be used, with why (logged once per session).
    pub skipped: Vec<String>,
}

pub fn to_webrtcbin(servers: &[IceServer]) -> WebrtcbinIce {
    let mut out = WebrtcbinIce::default();
    for server in servers {
        for url in &server.urls {
            if let Some(rest) = url.strip_prefix("stun:") {
                let rest = rest.trim_start_matches("//");
                if out.stun.is_none() {
                    out.stun = Some(format!("stun://{rest}"));
                } else {
                    out.skipped
                        .push(format!("{url}: webrtcbin uses one STUN server only"));
                }
            } else if let Some((scheme, rest)) = url
                .strip_prefix("turns:")
                .map(|r| ("turns", r))
                .or_else(|| url.strip_prefix("turn:").map(|r| ("turn", r)))
            {
                let rest = rest.trim_start_matches("//");
                match (&server.username, &server.credential) {
                    (Some(user), Some(pass)) => out.turn.push(format!(
                        "{scheme}://{}:{}@{rest}",
                        encode(user),
                        encode(pass)
                    )),
                    _ => out
                        .skipped
                        .push(format!("{url}: TURN needs a username and credential")),
                }
            } else {
                out.skipped.push(format!("{url}: unknown scheme"));
            }
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for URL userinfo.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str], user: Option<&str>, pass: Option<&str>) -> IceServer {
        IceServer {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            username: user.map(Into::into),
            credential: pass.map(Into::into),
        }
    }

    #[test]
    fn converts_stun_and_turn() {
        let ice = to_webrtcbin(&[
            server(&["stun:127.0.0.1:3478", "stun:other:3478"], None, None),
            server(
                &["turn:127.0.0.1:3478?transport=udp", "turns:t.example:5349"],
                Some("1700000000:demo"),
                Some("p@ss/word"),
            ),
            server(&["turn:nocreds:3478"], None, None),
        ]);
        assert_eq!(ice.stun.as_deref(), Some("stun://127.0.0.1:3478"));
        assert_eq!(
            ice.turn,
            vec![
                "turn://1700000000%3Ademo:p%40ss%2Fword@127.0.0.1:3478?transport=udp",
                "turns://1700000000%3Ademo:p%40ss%2Fword@t.example:5349",
            ]
        );
        assert_eq!(ice.skipped.len(), 2, "{:?}", ice.skipped);
    }
}
