//! The client's address, for rate limits and logs: the TCP peer, or, when the
//! peer is a configured trusted proxy, the nearest hop its forwarding header
//! (the one `trusted_proxy_header` names) lists that is not itself a trusted
//! proxy.
//!
//! Hand-written rather than taken from a crate: actix's
//! `ConnectionInfo::realip_remote_addr` takes the left-most entry, which any
//! client writes itself; the one crate for `Forwarded` (forwarded-header-value)
//! rejects a whole header for one bad element (so junk a client puts on the
//! left decides), splits quoted strings at their commas and takes no port in
//! `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED, X_FORWARDED_FOR};
use actix_web::HttpRequest;

use crate::config::{ForwardingHeader, TrustedProxies};

/// The address of the client behind `req`, the one every limit and log line
/// should use. It is the TCP peer, unless the peer is in `trusted`: then the
/// entries of the one header the proxies write (`X-Forwarded-For` or
/// `Forwarded: for=`, as configured) are read from the right, trusted hops
/// are skipped, and the first untrusted address is the client. Entries left
/// of it are never read, so a client cannot choose its address by writing
/// the header itself; the other header is never read at all.
///
/// Falls back to the peer when the entry that decides is unusable (not an
/// address, `unknown`, an obfuscated `_name`, a malformed header). `None`
/// only when the peer address is unknown.
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    Some(behind_proxies(peer, req.headers(), trusted))
}

fn behind_proxies(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    // Only the header the proxies write: the other one, passed on as the
    // client sent it, says whatever the client likes.
    let walked = match trusted.header {
        ForwardingHeader::XForwardedFor => {
            walk(headers, &X_FORWARDED_FOR, x_forwarded_for_hops, trusted)
        }
        ForwardingHeader::Forwarded => walk(headers, &FORWARDED, forwarded_hops, trusted),
    };
    match walked {
        Walk::Client(ip) => ip,
        Walk::Absent | Walk::Unusable => peer,
    }
}

/// What one forwarding header says about the client.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The header is not there (or lists nothing).
    Absent,
    /// The nearest untrusted hop, or the farthest hop when all are trusted.
    Client(IpAddr),
    /// The entry that decides cannot be used.
    Unusable,
}

/// One hop a forwarding header lists: its address, or `None` when it gives
/// none (`unknown`, `_obfuscated`, no `for=`, not an address).
type Hop = Option<IpAddr>;

/// Reads header `name` from the right: its last field first, each field's
/// entries right to left. `parse` splits one field into hops, or `None` when
/// the field cannot be split at all.
fn walk(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: fn(&str) -> Option<Vec<Hop>>,
    trusted: &TrustedProxies,
) -> Walk {
    let mut farthest_trusted = None;
    for field in headers.get_all(name).rev() {
        let Some(hops) = field.to_str().ok().and_then(parse) else {
            return Walk::Unusable;
        };
        for hop in hops.into_iter().rev() {
            match hop.map(|ip| ip.to_canonical()) {
                Some(ip) if trusted.contains(ip) => farthest_trusted = Some(ip),
                Some(ip) => return Walk::Client(ip),
                None => return Walk::Unusable,
            }
        }
    }
    farthest_trusted.map_or(Walk::Absent, Walk::Client)
}

/// `X-Forwarded-For: client, proxy1, proxy2`: addresses, possibly with ports.
fn x_forwarded_for_hops(field: &str) -> Option<Vec<Hop>> {
    Some(
        field
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(node_ip)
            .collect(),
    )
}

/// `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"` (RFC
/// 7239): comma-separated elements of `;`-separated `key=value` pairs, values
/// being tokens or quoted strings. Only an unterminated quoted string makes
/// the whole field unusable; any other fault spoils only its own element.
fn forwarded_hops(field: &str) -> Option<Vec<Hop>> {
    Some(
        split_outside_quotes(field, b',')?
            .into_iter()
            .filter(|e| !e.trim().is_empty())
            .map(forwarded_for)
            .collect(),
    )
}

/// The address in one `Forwarded` element's `for=` pair.
fn forwarded_for(element: &str) -> Hop {
    let mut found = None;
    for pair in split_outside_quotes(element, b';')? {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("for") {
            // RFC 7239 allows each parameter once per element.
            if found.is_some() {
                return None;
            }
            found = Some(unquote(value.trim())?);
        }
    }
    node_ip(&found?)
}

/// A token as is, or a quoted string's content with its `\` escapes undone.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// Splits at `sep` where it is not inside a quoted string; `None` when a
/// quoted string is not closed.
fn split_outside_quotes(text: &str, sep: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// The address in a node: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`, the port possibly obfuscated
/// (`:_p`). Anything else (`unknown`, `_hidden`, a name) has none.
fn node_ip(node: &str) -> Hop {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    if let Some(ip) = node
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<Ipv6Addr>().ok())
    {
        return Some(IpAddr::V6(ip));
    }
    match node.rsplit_once(':') {
        Some((host, port)) if port.starts_with('_') && !host.ends_with(':') => node_ip(host),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const PEER_PORT: u16 = 40000;

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "::1", "2001:db8:ffff::/48"]).unwrap()
    }

    /// The client address of a request from `peer` carrying `headers` (in
    /// order; a name may repeat).
    fn client(peer: &str, headers: &[(&str, &str)]) -> Option<IpAddr> {
        let mut req =
            TestRequest::default().peer_addr(SocketAddr::new(peer.parse().unwrap(), PEER_PORT));
        for &(name, value) in headers {
            req = req.append_header((name, value));
        }
        // Read through Forwarded when that is all a case sends.
        let header = if headers.iter().any(|&(n, _)| n == XFF) {
            ForwardingHeader::XForwardedFor
        } else {
            ForwardingHeader::Forwarded
        };
        client_ip(&req.to_http_request(), &trusted().reading(header))
    }

    /// Asserts that a request from `peer` with `headers` is from `want`.
    #[track_caller]
    fn expect(peer: &str, headers: &[(&str, &str)], want: &str) {
        assert_eq!(
            client(peer, headers),
            ip(want),
            "from {peer} with {headers:?}"
        );
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const XFF: &str = "x-forwarded-for";
    const FWD: &str = "forwarded";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        expect("203.0.113.9", &[], "203.0.113.9");
        expect(
            "203.0.113.9",
            &[(XFF, "198.51.100.1"), (FWD, "for=198.51.100.1")],
            "203.0.113.9",
        );
        // Nothing is trusted by default.
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:1".parse().unwrap())
            .insert_header((XFF, "198.51.100.1"))
            .to_http_request();
        assert_eq!(client_ip(&req, &TrustedProxies::default()), ip("10.0.0.1"));
    }

    #[test]
    fn without_a_peer_address_there_is_no_client_address() {
        let req = TestRequest::default().to_http_request();
        assert_eq!(client_ip(&req, &trusted()), None);
    }

    #[test]
    fn a_trusted_peer_without_forwarding_headers_is_the_client() {
        expect("10.0.0.1", &[], "10.0.0.1");
        expect("10.0.0.1", &[(XFF, "")], "10.0.0.1");
        expect("10.0.0.1", &[(XFF, " , ")], "10.0.0.1");
    }

    #[test]
    fn spoofed_left_most_entries_are_never_read() {
        // The client wrote the first two; the proxy appended what it saw.
        for xff in [
            "1.1.1.1, 2.2.2.2, 203.0.113.7",
            "garbage, \"quoted, 203.0.113.7",
            "10.0.0.9, 203.0.113.7",
            "unknown,203.0.113.7",
        ] {
            expect("10.0.0.1", &[(XFF, xff)], "203.0.113.7");
        }
        // A chain of trusted proxies is skipped from the right.
        expect(
            "10.0.0.1",
            &[(XFF, "1.1.1.1, 203.0.113.7, 10.0.0.3, 10.2.0.1")],
            "203.0.113.7",
        );
        expect(
            "10.0.0.1",
            &[(
                FWD,
                "for=1.1.1.1, for=203.0.113.7;proto=https, for=10.0.0.3",
            )],
            "203.0.113.7",
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_farthest_is_the_client() {
        expect("10.0.0.1", &[(XFF, "10.0.0.5, 10.0.0.2")], "10.0.0.5");
    }

    #[test]
    fn several_fields_of_one_header_read_as_one_list_last_field_nearest() {
        expect(
            "10.0.0.1",
            &[(XFF, "1.1.1.1"), (XFF, "203.0.113.7, 10.0.0.2")],
            "203.0.113.7",
        );
        expect(
            "10.0.0.1",
            &[(XFF, "203.0.113.7"), (XFF, "10.0.0.2")],
            "203.0.113.7",
        );
        expect(
            "10.0.0.1",
            &[(FWD, "for=1.1.1.1"), (FWD, "for=203.0.113.7")],
            "203.0.113.7",
        );
        // A broken field further left is not reached.
        expect(
            "10.0.0.1",
            &[(FWD, "for=\"unterminated"), (FWD, "for=203.0.113.7")],
            "203.0.113.7",
        );
    }

    #[test]
    fn ipv6_and_ports_are_understood_in_every_written_form() {
        for xff in [
            "2001:db8::7",
            "[2001:db8::7]",
            "[2001:db8::7]:4711",
            "2001:DB8:0:0:0:0:0:7",
        ] {
            expect("::1", &[(XFF, xff)], "2001:db8::7");
        }
        expect("10.0.0.1", &[(XFF, "203.0.113.7:5555")], "203.0.113.7");
        for fwd in [
            "for=\"[2001:db8::7]\"",
            "for=\"[2001:db8::7]:4711\"",
            "for=\"[2001:db8::7]:_port\"",
            "For=\"[2001:db8::7]\";proto=https",
        ] {
            expect("::1", &[(FWD, fwd)], "2001:db8::7");
        }
        expect(
            "10.0.0.1",
            &[(FWD, "for=\"203.0.113.7:47011\"")],
            "203.0.113.7",
        );
        expect("10.0.0.1", &[(FWD, "for=203.0.113.7:_x")], "203.0.113.7");
        // Without brackets a port cannot be told from the last group: this
        // is the address 2001:db8::7:443, as any reader would take it.
        expect("::1", &[(XFF, "2001:db8::7:443")], "2001:db8::7:443");
        // A trusted IPv6 proxy is skipped like an IPv4 one.
        expect(
            "::1",
            &[(XFF, "2001:db8::7, [2001:db8:ffff::1]:443")],
            "2001:db8::7",
        );
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        // How a dual-stack listener shows an IPv4 proxy.
        expect("::ffff:10.0.0.1", &[(XFF, "203.0.113.7")], "203.0.113.7");
        expect(
            "10.0.0.1",
            &[(XFF, "::ffff:203.0.113.7, ::ffff:10.0.0.2")],
            "203.0.113.7",
        );
        expect("::ffff:203.0.113.7", &[], "203.0.113.7");
    }

    #[test]
    fn the_rfc_7239_examples_give_their_client() {
        for (fwd, want) in [
            ("for=\"_gazonk\"", "10.0.0.1"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
        ] {
            expect("10.0.0.1", &[(FWD, fwd)], want);
        }
    }

    #[test]
    fn obfuscated_or_unknown_nearest_hops_fall_back_to_the_peer() {
        for fwd in [
            "for=_hidden",
            "for=\"_hidden\"",
            "for=unknown",
            "for=192.0.2.1, for=_hidden",
            "proto=https",
            "by=10.0.0.1;host=example.com",
        ] {
            expect("10.0.0.1", &[(FWD, fwd)], "10.0.0.1");
        }
        for xff in ["unknown", "203.0.113.7, _hidden", "203.0.113.7, unknown"] {
            expect("10.0.0.1", &[(XFF, xff)], "10.0.0.1");
        }
        // Further left than the client, they do not matter.
        expect(
            "10.0.0.1",
            &[(FWD, "for=_hidden, for=198.51.100.17")],
            "198.51.100.17",
        );
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer() {
        for xff in [
            "garbage",
            "203.0.113.7, garbage",
            "203.0.113.7 10.0.0.2",
            "203.0.113.300",
            "example.com",
            "[203.0.113.7]",
            "fe80::1%eth0",
        ] {
            expect("10.0.0.1", &[(XFF, xff)], "10.0.0.1");
        }
        for fwd in [
            "for=\"203.0.113.7",
            "for=203.0.113.7;for=198.51.100.1",
            "for",
            "for=",
            "for=\"\"",
            "for=\"203.0.113.7\\",
            "for=\"203.0.113.7\"x",
            "203.0.113.7",
        ] {
            expect("10.0.0.1", &[(FWD, fwd)], "10.0.0.1");
        }
        // Not even text: bytes a header value may hold but a str may not.
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:1".parse().unwrap())
            .insert_header((
                XFF,
                actix_web::http::header::HeaderValue::from_bytes(b"203.0.113.\xff").unwrap(),
            ))
            .to_http_request();
        assert_eq!(client_ip(&req, &trusted()), ip("10.0.0.1"));
    }

    #[test]
    fn quoted_commas_and_semicolons_stay_inside_their_value() {
        expect(
            "10.0.0.1",
            &[(FWD, "for=198.51.100.17;ext=\"x, for=6.6.6.6; for=7.7.7.7\"")],
            "198.51.100.17",
        );
        expect(
            "10.0.0.1",
            &[(
                FWD,
                "for=\"_a,b\", for=\"198.51.100.17\";ext=\"\\\"q\\\",\"",
            )],
            "198.51.100.17",
        );
    }

    #[test]
    fn only_the_configured_header_is_read_the_other_is_the_clients_to_write() {
        let both = |header, xff: &str, fwd: &str| {
            let req = TestRequest::default()
                .peer_addr(SocketAddr::new("10.0.0.1".parse().unwrap(), PEER_PORT))
                .insert_header((XFF, xff))
                .insert_header((FWD, fwd))
                .to_http_request();
            client_ip(&req, &trusted().reading(header))
        };
        // A client's own `Forwarded: for=_x` (passed on by an nginx that
        // appends to X-Forwarded-For) changes nothing, nor the reverse.
        for fwd in ["for=_x", "for=198.51.100.1", "garbage"] {
            assert_eq!(
                both(ForwardingHeader::XForwardedFor, "203.0.113.7", fwd),
                ip("203.0.113.7")
            );
        }
        for xff in ["198.51.100.1", "garbage", "unknown"] {
            assert_eq!(
                both(ForwardingHeader::Forwarded, xff, "for=203.0.113.7"),
                ip("203.0.113.7")
            );
        }
    }
}
