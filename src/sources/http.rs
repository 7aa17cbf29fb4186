//! The HTTP side of collecting photos: API calls paced under a service's hourly limit, retries
//! with exponential backoff for what may pass (time-outs, HTTP 429 and 5xx, an answer cut short),
//! `Retry-After` honoured, and size limits on every body.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// One remote service: its agent, its pace and its retry policy.
pub struct Service {
    agent: ureq::Agent,
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
    pub fn new(calls_per_hour: u32, timeout: Duration, retries: u32, backoff: Duration) -> Self {
        let agent = client(timeout)
            .http_status_as_error(false)
            .build()
            .new_agent();
        Service {
            agent,
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

    /// One GET of `url` with `query`; an API call (paced) or a download (not paced). The body
    /// may be at most `limit` bytes.
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
        let request = self
            .agent
            .get(url)
            .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        let response = request.call().map_err(|e| match e {
            ureq::Error::Timeout(_) => Fault::transient("no answer in time"),
            ureq::Error::Io(e) => Fault::transient(format!("connection failed ({e})")),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                Fault::transient("cannot connect")
            }
            other => Fault::Permanent(other.to_string()),
        })?;
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
}
