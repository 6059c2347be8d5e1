//! libpq's TLS parameters, taken out of a `PostgreSQL` url before tokio-postgres parses the
//! rest: it knows `sslmode` disable/prefer/require only and refuses the other TLS keys as
//! unknown, while a url pasted from psycopg or `psql` carries them. Both forms are read, as
//! tokio-postgres reads them: a `postgresql://` (or `postgres://`) URL's query, its keys and
//! values percent-decoded, and a `key=value` string, its values optionally single-quoted with
//! backslash escapes. The url handed on is the same text without those pairs.
//!
//! The last of a repeated key wins, as in libpq. A key this module cannot make sense of is never
//! dropped: an `ssl…` key it does not support is refused, and a string it cannot tokenize is
//! handed on whole, for tokio-postgres to refuse.

use crate::error::{Error, Result};

/// The TLS settings of a url, as written (checked by [`super::Tls::new`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) sslmode: Option<String>,
    pub(crate) sslrootcert: Option<String>,
    pub(crate) sslcert: Option<String>,
    pub(crate) sslkey: Option<String>,
    pub(crate) sslsni: Option<String>,
}

/// The TLS keys read here, and the one left to tokio-postgres (which implements it).
pub(crate) const SUPPORTED: &str = "sslmode, sslrootcert, sslcert, sslkey, sslsni, sslnegotiation";

impl Params {
    /// Take `key = value` when it is a TLS key read here (true); refuse an `ssl…` key that is
    /// not supported; leave any other key (false).
    fn take(&mut self, key: &str, value: String) -> Result<bool> {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslsni" => &mut self.sslsni,
            // tokio-postgres negotiates TLS directly (PostgreSQL 17) itself.
            "sslnegotiation" => return Ok(false),
            // sslpassword, sslcrl, sslcrldir, sslcertmode, ssl_min_protocol_version, …: libpq's,
            // not read here; ignoring one would weaken what the url asks for.
            other if other.starts_with("ssl") => {
                return Err(Error::InvalidJob(format!(
                    "{other}= in the PostgreSQL url is a TLS setting Kathikon does not support \
                     yet; remove it (the TLS settings read: {SUPPORTED})"
                )))
            }
            _ => return Ok(false),
        };
        *slot = Some(value);
        Ok(true)
    }
}

/// `url` without its TLS parameters, and those parameters.
pub(crate) fn split(url: &str) -> Result<(String, Params)> {
    match ["postgresql://", "postgres://"].iter().find(|p| url.starts_with(**p)) {
        Some(prefix) => split_url(url, prefix.len()),
        None => split_key_values(url),
    }
}

/// A URL: its query's pairs, percent-decoded.
fn split_url(url: &str, prefix: usize) -> Result<(String, Params)> {
    let mut params = Params::default();
    // tokio-postgres takes the credentials up to the first `@` before it looks for the query.
    let rest = &url[prefix..];
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    let Some(question) = rest[after_credentials..].find('?') else {
        return Ok((url.to_owned(), params));
    };
    let query_start = prefix + after_credentials + question + 1;
    let mut kept = Vec::new();
    for pair in url[query_start..].split('&') {
        if let Some((key, value)) = pair.split_once('=') {
            if params.take(&decode(key)?, decode(value)?)? {
                continue;
            }
        }
        kept.push(pair);
    }
    let mut rest = url[..query_start - 1].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

fn decode(text: &str) -> Result<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().map(String::from).map_err(|e| {
        Error::InvalidJob(format!(
            "the PostgreSQL url is not valid ({e} in its query); percent-encode its values as \
             UTF-8"
        ))
    })
}

/// A `key=value` string: each pair's text is removed whole.
fn split_key_values(url: &str) -> Result<(String, Params)> {
    let mut params = Params::default();
    let Some(pairs) = tokenize(url) else {
        return Ok((url.to_owned(), params));
    };
    let mut rest = String::with_capacity(url.len());
    let mut from = 0;
    for (span, key, value) in pairs {
        if params.take(key, value)? {
            rest.push_str(&url[from..span.start]);
            rest.push(' ');
            from = span.end;
        }
    }
    rest.push_str(&url[from..]);
    Ok((rest, params))
}

/// Each `key = value` pair of `s`: its byte range, key and unescaped value; `None` when `s` is
/// not such a string (tokio-postgres's grammar, which says what is wrong).
fn tokenize(s: &str) -> Option<Vec<(std::ops::Range<usize>, &str, String)>> {
    let mut pairs = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else { return Some(pairs) };
        while chars.next_if(|&(_, c)| !c.is_whitespace() && c != '=').is_some() {}
        let key_end = chars.peek().map_or(s.len(), |&(i, _)| i);
        if key_end == start {
            return None;
        }
        skip_ws(&mut chars);
        chars.next_if(|&(_, c)| c == '=')?;
        skip_ws(&mut chars);
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((i, '\'')) if quoted => break i + 1,
                Some((i, c)) if !quoted && c.is_whitespace() => break i,
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((_, c)) => value.push(c),
                None if quoted => return None,
                None => break s.len(),
            }
        };
        if !quoted && value.is_empty() {
            return None;
        }
        pairs.push((start..end, &s[start..key_end], value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: &str, root: &str) -> Params {
        Params { sslmode: Some(mode.into()), sslrootcert: Some(root.into()), ..Params::default() }
    }

    #[test]
    fn a_url_query_loses_its_tls_pairs_and_keeps_the_others() {
        let (rest, p) = split(
            "postgresql://u:p%3F@db.example:5432/app?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20b.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p%3F@db.example:5432/app?application_name=x&connect_timeout=5"
        );
        assert_eq!(p, params("verify-full", "/etc/ca b.pem"));

        let (rest, p) = split("postgres://db/app?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), p.sslmode.as_deref()), ("postgres://db/app", Some("require")));
        let (rest, p) = split("postgresql://db/app").unwrap();
        assert_eq!((rest.as_str(), p), ("postgresql://db/app", Params::default()));
        // A `?` in the credentials is not the query (tokio-postgres reads them up to `@`).
        let (rest, p) = split("postgresql://u:a?sslmode=x@db/app?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://u:a?sslmode=x@db/app");
        assert_eq!(p.sslmode.as_deref(), Some("disable"));
    }

    #[test]
    fn a_key_value_string_loses_its_tls_pairs_quoted_or_not() {
        let (rest, p) =
            split("host=db sslmode = verify-ca sslrootcert='/a b/c\\'d.pem' user=app sslsni=0")
                .unwrap();
        assert_eq!(p.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/a b/c'd.pem"));
        assert_eq!(p.sslsni.as_deref(), Some("0"));
        assert_eq!(rest.split_whitespace().collect::<Vec<_>>(), ["host=db", "user=app"]);
        // The last of a repeated key wins.
        let (_, p) = split("sslmode=require host=db sslmode=disable").unwrap();
        assert_eq!(p.sslmode.as_deref(), Some("disable"));
    }

    #[test]
    fn what_does_not_tokenize_is_handed_on_whole() {
        for url in ["host=db sslmode", "host=db sslrootcert='/x", "=x"] {
            assert_eq!(split(url).unwrap(), (url.to_owned(), Params::default()));
        }
    }

    #[test]
    fn an_unsupported_tls_key_is_refused_by_name() {
        for url in ["host=db sslcrl=/x.crl", "postgresql://db/app?sslpassword=secret"] {
            let Err(Error::InvalidJob(text)) = split(url) else { panic!("{url} taken") };
            assert!(text.contains("does not support"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
        let (rest, _) = split("host=db sslnegotiation=direct").unwrap();
        assert_eq!(rest, "host=db sslnegotiation=direct");
    }
}
