//! Who is asking: the client address (believing `X-Forwarded-For` only from
//! `TRUSTED_PROXIES`) and the user agent.

use std::net::IpAddr;

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use ipnet::IpNet;

use crate::services::ClientInfo;

use super::AppState;

/// The client address of a request. The socket address counts unless it belongs to a
/// trusted proxy; then the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy is the client (entries further left could be forged by the client).
/// IPv4 addresses seen through an IPv6 socket (`::ffff:10.0.0.5`) are read as IPv4, so
/// `TRUSTED_PROXIES` and the rate limits see one form of each address.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip().to_canonical())?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        match forwarded_ip(entry) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            None => break,
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`) or in brackets, as some load balancers write them.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// Extracts [`ClientInfo`] from a request.
pub struct Client(pub ClientInfo);

impl FromRequest for Client {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trusted = req
            .app_data::<actix_web::web::Data<AppState>>()
            .map(|s| s.services.settings.trusted_proxies.clone())
            .unwrap_or_default();
        let ip = client_ip(req, &trusted).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let user_agent: String = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        std::future::ready(Ok(Client(ClientInfo { ip, user_agent })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(x) = xff {
            r = r.insert_header(("x-forwarded-for", x));
        }
        r.to_http_request()
    }

    #[test]
    fn forwarded_for_is_ignored_without_trusted_proxies() {
        let ip = client_ip(&req("203.0.113.9:1234", Some("1.2.3.4")), &[]);
        assert_eq!(ip, Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_believed_from_a_trusted_proxy_only_up_to_the_first_untrusted_hop() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let ip = client_ip(
            &req("127.0.0.1:1", Some("6.6.6.6, 198.51.100.7, 10.1.1.1")),
            &trusted,
        );
        assert_eq!(ip, Some("198.51.100.7".parse().unwrap()));
        let ip = client_ip(&req("127.0.0.1:1", Some("garbage")), &trusted);
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_ports_and_brackets_are_understood() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // An IPv4 proxy seen through an IPv6 socket is still the trusted proxy.
        let ip = client_ip(&req("[::ffff:10.0.0.5]:1", Some("198.51.100.7")), &trusted);
        assert_eq!(ip, Some("198.51.100.7".parse().unwrap()));
        for entry in ["198.51.100.7:5678", "[2001:db8::1]:443", "[2001:db8::1]"] {
            let ip = client_ip(&req("10.0.0.5:1", Some(entry)), &trusted).unwrap();
            assert_ne!(ip, "10.0.0.5".parse::<IpAddr>().unwrap(), "{entry}");
        }
    }
}
