//! The HTTP side of collecting photos: API calls paced under a service's hourly limit, retries
//! with exponential backoff for what may pass (time-outs, HTTP 429 and 5xx, an answer cut short),
//! `Retry-After` honoured, size limits on every body, and photo URLs from outside (a records CSV,
//! a service's answer) kept away from this machine and its network.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// May pass: worth another attempt, after `retry_after` if the service said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will not pass by trying again.
    Permanent(String),
}

impl Fault {
    pub fn transient(reason: impl Into<String>) -> Self {
        Fault::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Fault::Transient { reason, .. } | Fault::Permanent(reason) => reason,
        }
    }
}

/// The longest wait a `Retry-After` header can impose before vlinder gives up instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The settings every HTTP client of vlinder starts from: a deadline for the whole request,
/// vlinder's user agent, and the operating system's certificate store (which honours
/// `SSL_CERT_FILE`), so that HTTPS works behind a proxy with its own certificate authority, as
/// it does for pip and curl.
pub fn client(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent(concat!("vlinder/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
}

/// The most redirects a photo URL may take.
pub const MAX_REDIRECTS: usize = 5;

/// Which addresses a photo URL may lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only: a URL (or a redirect) to loopback, private, link-local, shared or
    /// unspecified addresses is refused, so that a hostile CSV cell or answer cannot reach
    /// services on this machine or its network.
    Public,
    /// Any address (`--allow-private-urls`): for photos served inside one's own network.
    Any,
}

impl Reach {
    pub fn from_allow_private(allow: bool) -> Self {
        if allow { Reach::Any } else { Reach::Public }
    }
}

/// Why `ip` is not a public address, if it is not.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 0 {
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                Some("broadcast, multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 (::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d, and the
            // deprecated IPv4-compatible ::a.b.c.d) is judged as the IPv4 address it reaches.
            let segments = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            if segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                let [a, b, c, d] = v6.octets()[12..] else {
                    unreachable!()
                };
                return non_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b, c, d] = v6.octets()[12..] else {
                    unreachable!()
                };
                return non_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Refuses `addrs` of `host` if any of them is not public: the reason names the host, the
/// address and what to do.
fn refuse_non_public(host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
    for addr in addrs {
        if let Some(kind) = non_public(addr.ip()) {
            return Err(format!(
                "refused: {host} is {}, a {kind} address; photo URLs may lead only to public addresses (--allow-private-urls lifts this)",
                addr.ip()
            ));
        }
    }
    Ok(())
}

/// The host and port of an http(s) URL.
fn host_and_port(url: &str) -> Result<(String, u16), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("only http:// and https:// URLs are fetched".into());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    let port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err("only http:// and https:// URLs are fetched".into()),
    };
    let authority = uri.authority().ok_or("the URL names no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok((host.to_string(), authority.port_u16().unwrap_or(port)))
}

/// Looks `url`'s host up and refuses it unless every address is public. Checked before each
/// hop, which also covers a proxy (where ureq resolves nothing itself).
fn check_public(url: &str) -> Result<(), String> {
    let (host, port) = host_and_port(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot look up {host} ({e})"))?
        .collect();
    refuse_non_public(&host, &addrs)
}

/// ureq's resolver that refuses non-public addresses: the connection goes to the addresses
/// checked, so a name that answers differently the second time (DNS rebinding) gains nothing.
#[derive(Debug, Default)]
struct PublicOnly(DefaultResolver);

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.0.resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        refuse_non_public(host, &addrs).map_err(|why| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                why,
            ))
        })?;
        Ok(addrs)
    }
}

/// `location` (a redirect's `Location`) as an absolute URL, relative to `base`.
fn redirect_target(base: &str, location: &str) -> Result<String, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let uri: ureq::http::Uri = base.parse().map_err(|e| format!("not a URL ({e})"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    Ok(if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.contains(':') {
        return Err(format!(
            "a redirect to {location}: only http(s) is followed"
        ));
    } else {
        let path = uri.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    })
}

/// One remote service: its agent, its pace and its retry policy.
pub struct Service {
    agent: ureq::Agent,
    /// The agent for photo downloads: redirects followed by hand, each hop checked.
    photos: ureq::Agent,
    reach: Reach,
    min_interval: Duration,
    last_call: Mutex<Option<Instant>>,
    attempts: u32,
    backoff: Duration,
    api_calls: AtomicUsize,
}

impl Service {
    /// A service called at most `calls_per_hour` times an hour, each request given `timeout`,
    /// each failure that may pass retried up to `retries` times, waiting `backoff`, then
    /// twice that, and so on.
    /// Photo downloads may lead only where `reach` allows.
    pub fn new(
        calls_per_hour: u32,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        reach: Reach,
    ) -> Self {
        let agent = client(timeout)
            .http_status_as_error(false)
            .build()
            .new_agent();
        let photos = client(timeout)
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        let photos = match reach {
            Reach::Public => {
                ureq::Agent::with_parts(photos, DefaultConnector::default(), PublicOnly::default())
            }
            Reach::Any => photos.new_agent(),
        };
        Service {
            agent,
            photos,
            reach,
            min_interval: Duration::from_secs_f64(3600.0 / calls_per_hour.max(1) as f64),
            last_call: Mutex::new(None),
            attempts: retries + 1,
            backoff,
            api_calls: AtomicUsize::new(0),
        }
    }

    /// API calls made so far, retries included.
    pub fn api_calls(&self) -> usize {
        self.api_calls.load(Ordering::Relaxed)
    }

    /// Waits until the next API call keeps to the hourly limit.
    fn pace(&self) {
        let mut last = self.last_call.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *last {
            let next = at + self.min_interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        *last = Some(Instant::now());
        self.api_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// One GET of `url` with `query` (API calls only); an API call (paced) or a photo download (not paced, its
    /// redirects followed by hand up to [`MAX_REDIRECTS`], each hop where the service's reach
    /// allows). The body may be at most `limit` bytes.
    pub fn get(
        &self,
        url: &str,
        query: &[(&str, String)],
        limit: u64,
        api_call: bool,
    ) -> Result<Vec<u8>, Fault> {
        if api_call {
            self.pace();
        }
        let response = if api_call {
            let request = self
                .agent
                .get(url)
                .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            request.call().map_err(call_fault)?
        } else {
            self.follow(url)?
        };
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Fault::Transient {
                reason: format!("HTTP {status}"),
                retry_after,
            });
        }
        if status >= 400 {
            return Err(Fault::Permanent(format!("HTTP {status}")));
        }
        response
            .into_body()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    Fault::Permanent(format!("the answer is larger than {limit} bytes"))
                }
                other => Fault::transient(format!("the answer was cut short ({other})")),
            })
    }

    /// GETs the photo at `url`, following up to [`MAX_REDIRECTS`] redirects, each hop checked.
    fn follow(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, Fault> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            if self.reach == Reach::Public {
                check_public(&url).map_err(Fault::Permanent)?;
            }
            let response = self.photos.get(&url).call().map_err(call_fault)?;
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok());
            match (response.status().is_redirection(), location) {
                (true, Some(location)) => {
                    url = redirect_target(&url, location).map_err(Fault::Permanent)?
                }
                _ => return Ok(response),
            }
        }
        Err(Fault::Permanent(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent; the error
    /// says why and after how many attempts.
    pub fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Fault>) -> Result<T, String> {
        let mut delay = self.backoff;
        for n in 1..=self.attempts {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(Fault::Permanent(reason)) => return Err(reason),
                Err(fault @ Fault::Transient { .. }) if n == self.attempts => {
                    return Err(format!("{} (after {n} attempts)", fault.reason()));
                }
                Err(Fault::Transient { retry_after, .. }) => {
                    let wait = retry_after.unwrap_or(delay);
                    if wait > MAX_RETRY_AFTER {
                        return Err(format!(
                            "the service asks to wait {}s before trying again; run again later",
                            wait.as_secs()
                        ));
                    }
                    std::thread::sleep(wait);
                    delay = delay.saturating_mul(2);
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// What a failed call means: a refused address or a bad URL will not pass by trying again.
fn call_fault(e: ureq::Error) -> Fault {
    match e {
        ureq::Error::Timeout(_) => Fault::transient("no answer in time"),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Fault::Permanent(e.to_string())
        }
        ureq::Error::Io(e) => Fault::transient(format!("connection failed ({e})")),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            Fault::transient("cannot connect")
        }
        other => Fault::Permanent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_trusts_the_operating_systems_certificates() {
        // webpki's built-in roots (ureq's default) fail behind a proxy with its own authority.
        let config = client(Duration::from_secs(5)).build();
        assert!(matches!(
            config.tls_config().root_certs(),
            ureq::tls::RootCerts::PlatformVerifier
        ));
    }

    #[test]
    fn only_public_addresses_pass() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fd00::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("64:ff9b::a00:1", Some("private")),
            ("::127.0.0.1", Some("loopback")),
            ("::10.0.0.1", Some("private")),
            ("::169.254.169.254", Some("link-local")),
            ("8.8.8.8", None),
            ("151.101.1.1", None),
            ("2a00:1450:4009::1", None),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[test]
    fn a_photo_url_to_this_machine_is_refused_before_any_connection() {
        let err = check_public("http://127.0.0.1:9/x.jpg").unwrap_err();
        assert!(
            err.contains("127.0.0.1")
                && err.contains("loopback")
                && err.contains("--allow-private-urls"),
            "{err}"
        );
        let err = check_public("http://localhost/x.jpg").unwrap_err();
        assert!(err.contains("localhost is"), "{err}");
        assert!(
            check_public("http://[::1]:8080/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            check_public("file:///etc/passwd")
                .unwrap_err()
                .contains("only http")
        );
    }

    #[test]
    fn redirect_targets_resolve_against_the_hop_they_came_from() {
        let base = "https://a.example/photos/1.jpg?x=1";
        for (location, want) in [
            ("https://b.example/2.jpg", "https://b.example/2.jpg"),
            ("//c.example/3.jpg", "https://c.example/3.jpg"),
            ("/4.jpg", "https://a.example/4.jpg"),
            ("5.jpg", "https://a.example/photos/5.jpg"),
        ] {
            assert_eq!(redirect_target(base, location).unwrap(), want);
        }
        assert!(redirect_target(base, "gopher://x/").is_err());
    }
}
