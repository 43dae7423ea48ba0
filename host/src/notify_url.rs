//! Which push URLs are acceptable (SPEC §7): http(s), at most 2048 characters, no credentials,
//! and — unless the operator allows it — no private, loopback or link-local destination, judged
//! on every address the name resolves to. The push dispatcher checks again at send time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest accepted URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Checks `text` and resolves its host; returns the parsed URL or why it is refused.
pub async fn check(text: &str, allow_private: bool) -> Result<url::Url, String> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(format!("longer than {MAX_URL_CHARS} characters"));
    }
    let url = url::Url::parse(text).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let host = url.host_str().ok_or("has no host")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().ok_or("has no port")?;
    if allow_private {
        return Ok(url);
    }
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| format!("host `{host}` cannot be resolved: {err}"))?
            .map(|address| address.ip())
            .collect(),
    };
    if let Some(ip) = addresses.iter().find(|ip| !is_public(**ip)) {
        return Err(format!(
            "resolves to {ip}, a private, loopback or link-local address (set CARBON_PUSH_ALLOW_PRIVATE=true to allow)"
        ));
    }
    Ok(url)
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_what_the_spec_refuses() {
        for (url, reason) in [
            ("ftp://example.com/x", "http or https"),
            ("https://user:pw@93.184.216.34/", "credentials"),
            ("http://127.0.0.1:9000/push", "loopback"),
            ("http://10.1.2.3/push", "private"),
            ("http://169.254.169.254/latest", "link-local"),
            ("http://[::1]/push", "loopback"),
            ("http://[fd00::1]/push", "private"),
            ("http://localhost:8080/", "private"),
            ("not a url", "not a URL"),
        ] {
            let err = check(url, false).await.unwrap_err();
            assert!(err.contains(reason), "{url}: {err}");
        }
        let long = format!("https://93.184.216.34/{}", "a".repeat(2048));
        assert!(check(&long, false).await.unwrap_err().contains("2048"));
        assert!(check("https://93.184.216.34/push", false).await.is_ok());
        assert!(check("http://127.0.0.1:9000/push", true).await.is_ok());
    }
}
