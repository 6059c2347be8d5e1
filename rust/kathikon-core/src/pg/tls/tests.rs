//! What a url's TLS settings mean and refuse at open, without a server: the modes, and (with
//! the feature) libpq's default files under a home directory of the test's own, bad files, and
//! the key's permissions. Handshakes against a real server are in `tests/pg_tls.rs`.

use super::*;

fn tls(url: &str) -> Result<Tls> {
    let (_, params) = split(url)?;
    Tls::new(&params, None)
}

fn refusal(url: &str) -> String {
    match tls(url) {
        Err(Error::InvalidJob(text)) => text,
        Err(other) => panic!("{url}: not a configuration error: {other}"),
        Ok(_) => panic!("{url} was accepted"),
    }
}

#[test]
fn the_default_mode_is_prefer_and_system_roots_make_it_verify_full() {
    assert_eq!(tls("host=db").unwrap().mode, SslMode::Prefer);
    for mode in SslMode::ALL {
        // verify-ca and verify-full need a root certificate (tested in `files` below).
        if mode <= SslMode::Prefer || (cfg!(feature = "postgres-tls") && mode == SslMode::Require) {
            assert_eq!(tls(&format!("host=db sslmode={}", mode.name())).unwrap().mode, mode);
        }
    }
    let text = refusal("host=db sslmode=verify");
    assert!(text.contains("sslmode=verify ") && text.contains("verify-full"), "{text}");
    let text = refusal("host=db sslmode=require sslrootcert=system");
    assert!(text.contains("sslmode=verify-full"), "{text}");
}

#[cfg(feature = "postgres-tls")]
#[test]
fn system_roots_default_to_verify_full() {
    let tls = tls("postgresql://db/app?sslrootcert=system").unwrap();
    assert_eq!(tls.mode, SslMode::VerifyFull);
}

#[cfg(not(feature = "postgres-tls"))]
#[test]
fn a_build_without_tls_refuses_what_needs_it() {
    for url in [
        "host=db sslmode=require",
        "host=db sslmode=verify-full",
        "host=db sslrootcert=/ca.pem",
        "host=db sslmode=prefer sslcert=/c.pem",
    ] {
        let text = refusal(url);
        assert!(text.contains("postgres-tls"), "{url}: {text}");
    }
    for url in [
        "host=db sslmode=prefer",
        "host=db sslmode=allow",
        "host=db sslmode=disable sslrootcert=/ca.pem",
    ] {
        tls(url).unwrap();
    }
}

#[cfg(feature = "postgres-tls")]
mod files {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::super::client::Client;
    use super::super::{split, SslMode, Tls};
    use crate::error::Error;

    /// A certificate (an authority of its own) and its key, as PEM.
    fn certificate() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn client(url: &str, home: &Path) -> Result<Client, Error> {
        let (_, params) = split(url)?;
        let tls = Tls::new(&params, Some(home))?;
        assert!(tls.mode != SslMode::Disable);
        Ok(tls.client.expect("a TLS configuration"))
    }

    fn refusal(url: &str, home: &Path) -> String {
        match client(url, home) {
            Err(Error::InvalidJob(text)) => text,
            Err(other) => panic!("{url}: not a configuration error: {other}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    #[test]
    fn verify_modes_need_a_root_certificate_and_name_the_fixes() {
        let home = tempfile::tempdir().unwrap();
        for mode in ["verify-ca", "verify-full"] {
            let text = refusal(&format!("host=db sslmode={mode}"), home.path());
            assert!(text.contains(&format!("sslmode={mode}")), "{text}");
            assert!(text.contains("sslrootcert=system"), "{text}");
            assert!(text.contains("sslrootcert=/path/to/ca.pem"), "{text}");
            assert!(text.contains("root.crt"), "{text}");
        }
        // Without a root certificate, require and prefer check nothing (libpq's meaning).
        for mode in ["require", "prefer", "allow"] {
            let client = client(&format!("host=db sslmode={mode}"), home.path()).unwrap();
            assert_eq!(client.roots, None, "{mode}");
        }
    }

    #[test]
    fn libpqs_default_root_certificate_is_read_when_it_exists() {
        let home = tempfile::tempdir().unwrap();
        write(&home.path().join(".postgresql/root.crt"), &certificate().0, 0o644);
        // As in libpq, with the file there require checks the chain too (as verify-ca).
        for mode in ["require", "verify-ca", "verify-full", "prefer"] {
            let client = client(&format!("host=db sslmode={mode}"), home.path()).unwrap();
            let roots = client.roots.unwrap();
            assert!(roots.contains(".postgresql/root.crt") && roots.contains("default"), "{roots}");
        }
        // A url's own sslrootcert wins over it.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        write(&ca, &certificate().0, 0o644);
        let url = format!("host=db sslmode=verify-full sslrootcert={}", ca.display());
        assert_eq!(
            client(&url, home.path()).unwrap().roots.unwrap(),
            format!("sslrootcert={}", ca.display())
        );
    }

    #[test]
    fn a_root_certificate_file_that_cannot_serve_is_refused_naming_it() {
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = certificate().1;
        let cases = [
            ("missing.pem", None, "cannot be read"),
            ("empty.pem", Some(""), "holds no certificate"),
            ("key.pem", Some(key.as_str()), "holds no certificate"),
            ("broken.pem", Some("-----BEGIN CERTIFICATE-----\nAAAA\n"), "not valid PEM"),
            (
                "garbage.pem",
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                "none of its 1 certificates",
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.path().join(name);
            if let Some(text) = text {
                write(&path, text, 0o644);
            }
            let url = format!("host=db sslmode=require sslrootcert={}", path.display());
            let refused = refusal(&url, home.path());
            assert!(refused.contains(expected), "{name}: {refused}");
            assert!(refused.contains(&format!("sslrootcert={}", path.display())), "{refused}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key_readable_by_its_owner_only() {
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = certificate();
        let cert = dir.path().join("client.crt");
        let key = dir.path().join("client.key");
        write(&cert, &cert_pem, 0o644);
        write(&key, &key_pem, 0o600);
        let url = |extra: &str| format!("host=db sslmode=require {extra}");
        let both = format!("sslcert={} sslkey={}", cert.display(), key.display());
        client(&url(&both), home.path()).unwrap();

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = refusal(&url(&both), home.path());
        assert!(text.contains("chmod 600") && text.contains("mode 644"), "{text}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

        let text = refusal(&url(&format!("sslcert={}", cert.display())), home.path());
        assert!(text.contains("has no key beside it") && text.contains("sslkey="), "{text}");
        let text = refusal(&url(&format!("sslkey={}", key.display())), home.path());
        assert!(text.contains("has no certificate beside it"), "{text}");

        // Another certificate's key.
        let other = dir.path().join("other.key");
        write(&other, &certificate().1, 0o600);
        let text = refusal(
            &url(&format!("sslcert={} sslkey={}", cert.display(), other.display())),
            home.path(),
        );
        assert!(text.contains("the key must be the certificate's own"), "{text}");

        // A certificate file given as the key.
        let not_a_key = dir.path().join("not-a.key");
        write(&not_a_key, &cert_pem, 0o600);
        let text = refusal(
            &url(&format!("sslcert={} sslkey={}", cert.display(), not_a_key.display())),
            home.path(),
        );
        assert!(text.contains("holds no private key"), "{text}");
    }

    #[test]
    fn libpqs_default_client_certificate_is_read_when_it_exists() {
        let home = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = certificate();
        // A default key alone is not used (libpq's rule), so it is no error.
        write(&home.path().join(".postgresql/postgresql.key"), &key_pem, 0o600);
        client("host=db sslmode=require", home.path()).unwrap();
        write(&home.path().join(".postgresql/postgresql.crt"), &cert_pem, 0o644);
        client("host=db sslmode=require", home.path()).unwrap();
        // …and its permissions are checked as a named one's.
        std::fs::set_permissions(
            home.path().join(".postgresql/postgresql.key"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let text = refusal("host=db sslmode=require", home.path());
        assert!(text.contains("postgresql.key") && text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn sslsni_is_zero_or_one() {
        let home = tempfile::tempdir().unwrap();
        client("host=db sslmode=require sslsni=0", home.path()).unwrap();
        client("host=db sslmode=require sslsni=1", home.path()).unwrap();
        let text = refusal("host=db sslmode=require sslsni=yes", home.path());
        assert!(text.contains("sslsni=yes"), "{text}");
    }

    #[test]
    fn disable_reads_no_file() {
        let home = tempfile::tempdir().unwrap();
        let (_, params) = split("host=db sslmode=disable sslrootcert=/nonexistent.pem").unwrap();
        let tls = Tls::new(&params, Some(home.path())).unwrap();
        assert!(tls.mode == SslMode::Disable && tls.client.is_none());
    }
}
