//! Connection URLs without their secrets, for logs and errors.

use std::fmt;

/// A connection URL split into what may be shown and what must not be.
///
/// `Display` and `Debug` show only the redacted form: the password (in the userinfo or a
/// `password=` query parameter) never appears, and the query string is dropped entirely.
#[derive(Clone)]
pub(crate) struct RedactedUrl {
    shown: String,
    secrets: Vec<String>,
}

impl RedactedUrl {
    pub(crate) fn new(url: &str) -> Self {
        let mut secrets = Vec::new();
        let Some(scheme_end) = url.find("://") else {
            // Not an authority URL (`sqlite::memory:`, `memory`): nothing to hide, but
            // drop anything after `?` in case a parameter carries a secret.
            let shown = match url.split_once('?') {
                Some((base, _)) => format!("{base}?…"),
                None => url.to_owned(),
            };
            return Self { shown, secrets };
        };
        let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);

        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, password)) => {
                    push_secret(&mut secrets, password);
                    format!("{user}:***@{host}")
                }
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };

        let tail = tail.split('#').next().unwrap_or_default();
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        if let Some(query) = query {
            for pair in query.split('&') {
                if let Some((key, value)) = pair.split_once('=') {
                    let key = key.to_ascii_lowercase();
                    if key.contains("pass") || key.contains("secret") || key.contains("token") {
                        push_secret(&mut secrets, value);
                    }
                }
            }
        }
        let shown = match query {
            Some(_) => format!("{scheme}://{authority}{path}?…"),
            None => format!("{scheme}://{authority}{path}"),
        };
        Self { shown, secrets }
    }

    /// `message` with every occurrence of a secret of this URL replaced by `***`: for
    /// driver error messages, which might echo what they were given.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

fn push_secret(secrets: &mut Vec<String>, raw: &str) {
    if raw.is_empty() {
        return;
    }
    let decoded = percent_decode(raw);
    if decoded != raw && !decoded.is_empty() {
        secrets.push(decoded);
    }
    secrets.push(raw.to_owned());
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
            && let Ok(byte) = u8::try_from(h * 16 + l)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::RedactedUrl;

    #[test]
    fn password_in_userinfo_is_hidden() {
        let url = RedactedUrl::new("postgres://idp:s3cr%40t@db.example:5432/idp");
        assert_eq!(url.to_string(), "postgres://idp:***@db.example:5432/idp");
        assert_eq!(
            format!("{url:?}"),
            "\"postgres://idp:***@db.example:5432/idp\""
        );
        assert_eq!(
            url.scrub("auth failed for s3cr@t and s3cr%40t"),
            "auth failed for *** and ***"
        );
    }

    #[test]
    fn query_string_is_dropped_and_its_password_scrubbed() {
        let url = RedactedUrl::new("postgresql://db/idp?user=idp&password=hunter2&sslmode=require");
        assert_eq!(url.to_string(), "postgresql://db/idp?…");
        assert_eq!(url.scrub("password=hunter2"), "password=***");
    }

    #[test]
    fn redis_password_only_userinfo() {
        let url = RedactedUrl::new("rediss://:pw@cache:6380/0");
        assert_eq!(url.to_string(), "rediss://:***@cache:6380/0");
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for plain in [
            "sqlite://data/idp.db",
            "sqlite:///var/lib/idp.db",
            "sqlite::memory:",
            "redis://127.0.0.1:6379",
            "postgres://postgres@127.0.0.1/test",
        ] {
            assert_eq!(RedactedUrl::new(plain).to_string(), plain);
        }
    }
}
