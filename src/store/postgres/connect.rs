//! A PostgreSQL location as configured (`postgres://` or `postgresql://`),
//! shown without its password, and the pool of TLS connections to it.
//!
//! `sslmode` means what it means to libpq: `disable` (plain), `prefer` (the
//! default: TLS when the server offers it, unverified), `require` (TLS,
//! unverified), `verify-ca` (TLS with a certificate from a trusted
//! authority, any name) and `verify-full` (that, and the certificate names
//! the host). tokio-postgres knows only the first three, so the mode is
//! taken out of the URL here and carried out by the rustls verifier.
//! Trusted authorities are those of `sslrootcert` (a PEM file) when given,
//! else the Web PKI roots (webpki-roots): libpq's `~/.postgresql/root.crt`
//! has no equivalent on a server.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much TLS the connection insists on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP or a socket.
    Disable,
    /// TLS if the server offers it; its certificate is not checked.
    Prefer,
    /// TLS always; its certificate is not checked.
    Require,
    /// TLS with a certificate from a trusted authority.
    VerifyCa,
    /// TLS with a certificate from a trusted authority for this host name.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// A PostgreSQL database URL, parsed once. Its `Display` and `Debug` never
/// show a password (neither the URL's nor a `password=` parameter).
#[derive(Clone)]
pub struct PostgresUrl {
    /// What tokio-postgres connects with (`sslmode` mapped to its three).
    config: tokio_postgres::Config,
    /// The URL with every password replaced, for messages and `check-config`.
    redacted: String,
    /// What TLS is asked for.
    ssl_mode: SslMode,
    /// A PEM file of trusted authorities for `verify-ca`/`verify-full`.
    root_cert: Option<PathBuf>,
}

/// Why a database URL was refused; never quotes the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PostgreSQL URL: {0}")]
pub struct BadUrl(String);

impl PostgresUrl {
    /// Whether `s` names PostgreSQL rather than a SQLite file.
    pub fn is_postgres(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(s: &str) -> Result<Self, BadUrl> {
        if !Self::is_postgres(s) {
            return Err(BadUrl(
                "it must start with postgres:// or postgresql://".into(),
            ));
        }
        // Split by hand rather than with the url crate, which refuses what
        // libpq takes, such as `postgres://user@/db?host=/run/postgresql`
        // (a user and a Unix socket).
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        // Percent-encoded by hand: tokio-postgres decodes %20 but takes the
        // `+` that form encoding writes for a space literally.
        let pair = |k: &str, v: &str| {
            use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
            const QUERY: &AsciiSet = &CONTROLS
                .add(b' ')
                .add(b'"')
                .add(b'#')
                .add(b'%')
                .add(b'&')
                .add(b'+')
                .add(b'=');
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        };
        let decode = |t: &str| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| BadUrl("a parameter is not UTF-8".into()))
        };
        let mut kept = Vec::new();
        let mut redacted_query = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            match k.as_str() {
                "sslmode" => {
                    ssl_mode = SslMode::parse(&v).ok_or_else(|| {
                        BadUrl(format!(
                            "sslmode {v:?} is not one of disable, prefer, require, verify-ca, verify-full"
                        ))
                    })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(&v)),
                _ => kept.push(pair(&k, &v)),
            }
            let shown = if k == "password" { "REDACTED" } else { &v };
            redacted_query.push(pair(&k, shown));
        }
        let connect_base = socket_form(base, &mut kept);
        let plain = match kept.is_empty() {
            true => connect_base,
            false => format!("{connect_base}?{}", kept.join("&")),
        };
        let mut config =
            tokio_postgres::Config::from_str(&plain).map_err(|e| BadUrl(super::rows::chain(&e)))?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        // Every connection commits durably, whatever the cluster's default:
        // a write we acknowledge must survive a crash of the database
        // server (synchronous_commit = off would lose the last ones).
        // And no transaction of ours may sit idle holding row locks that
        // other nodes wait on: ours never pause between statements for
        // more than a round trip, so one idle for a minute belongs to a
        // node that hung or was cut off, and the server ends it. Ours come
        // last, so they win over the same settings in `options`.
        const OURS: &str = "-c synchronous_commit=on -c idle_in_transaction_session_timeout=60s";
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {OURS}"),
            _ => OURS.to_owned(),
        };
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("invite-server");
        }
        let rq = redacted_query.join("&");
        let shown = match rq.is_empty() {
            true => redact_userinfo(base),
            false => format!("{}?{rq}", redact_userinfo(base)),
        };
        Ok(Self {
            config,
            redacted: shown,
            ssl_mode,
            root_cert,
        })
    }

    /// What TLS is asked for.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// A pool of at most `size` connections, each opened on first need.
    pub(super) fn pool(&self, size: usize) -> Result<Pool, String> {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
        let manager = Manager::from_config(
            self.config.clone(),
            tls,
            ManagerConfig {
                // Fast: a connection whose socket closed is dropped; one
                // that broke mid-query is detected by its failed query.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            // A request waits at most this long for a free connection or a
            // new one, then fails as transient (503) instead of hanging.
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| e.to_string())
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.ssl_mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(Unverified(Arc::clone(&provider)))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                        .build()
                        .map_err(|e| e.to_string())?;
                if self.ssl_mode == SslMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "sslrootcert {} holds no usable certificate",
                        path.display()
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
}

/// tokio-postgres refuses a URL with a user but no host, which libpq takes
/// for the default Unix socket or one named by `host=`
/// (`postgres://user@/db?host=/run/postgresql`): such a user (and password)
/// move into parameters, where it takes them (they stay percent-encoded,
/// as parameters are).
fn socket_form(base: &str, params: &mut Vec<String>) -> String {
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return base.to_owned();
    };
    let rest = &base[scheme_end..];
    let slash = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..slash];
    match authority.rfind('@') {
        Some(at) if authority[at + 1..].is_empty() => {
            let userinfo = &authority[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            params.push(format!("user={user}"));
            if let Some(password) = password {
                params.push(format!("password={password}"));
            }
            format!("{}{}", &base[..scheme_end], &rest[slash..])
        }
        _ => base.to_owned(),
    }
}

/// `scheme://user:password@host/...` with the password replaced; the
/// password is whatever follows the first `:` of the part before the last
/// `@` of the authority.
fn redact_userinfo(base: &str) -> String {
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return base.to_owned();
    };
    let rest = &base[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority
        .rfind('@')
        .map(|at| (at, authority[..at].find(':')))
    {
        Some((at, Some(colon))) => format!(
            "{}{}:REDACTED{}",
            &base[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => base.to_owned(),
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted)
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.redacted == other.redacted && self.config == other.config
    }
}

/// `prefer` and `require`: the channel is encrypted, but, as with libpq,
/// the certificate is not checked (the handshake's signatures still are).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the Web PKI check, except that the certificate may name any
/// host (libpq's meaning: the authority is trusted, the name is not checked).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_no_password_however_it_is_given() {
        let url = PostgresUrl::parse(
            "postgres://invites:s3cret@db.example:5433/invites?password=other&sslmode=require",
        )
        .unwrap();
        let shown = format!("{url} {url:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(
            shown.contains("invites:REDACTED@db.example:5433/invites"),
            "{shown}"
        );
        assert_eq!(url.ssl_mode(), SslMode::Require);
        for (given, shown) in [
            ("postgres://u:p%40ss@h/d", "postgres://u:REDACTED@h/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("postgresql://:pw@h:1/d", "postgresql://:REDACTED@h:1/d"),
            // A user and a Unix socket, which libpq takes.
            (
                "postgres://u@/d?host=/run/postgresql",
                "postgres://u@/d?host=/run/postgresql",
            ),
        ] {
            assert_eq!(PostgresUrl::parse(given).unwrap().to_string(), shown);
        }
        let socket = PostgresUrl::parse("postgres://u:pw@/d?host=/run/postgresql").unwrap();
        assert_eq!(socket.config.get_user(), Some("u"));
        assert_eq!(socket.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(socket.config.get_dbname(), Some("d"));
    }

    #[test]
    fn every_libpq_sslmode_is_understood_and_others_are_refused() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = PostgresUrl::parse(&format!("postgresql://u@h/d?sslmode={text}")).unwrap();
            assert_eq!(url.ssl_mode(), mode);
            assert!(url.tls_config().is_ok(), "{text}");
        }
        assert_eq!(
            PostgresUrl::parse("postgres://u@h/d").unwrap().ssl_mode(),
            SslMode::Prefer
        );
        assert!(PostgresUrl::parse("postgres://u@h/d?sslmode=allow").is_err());
    }

    #[test]
    fn every_connection_asks_for_synchronous_commit() {
        let url = PostgresUrl::parse("postgres://u@h/d?options=-c%20work_mem%3D4MB").unwrap();
        assert_eq!(
            url.config.get_options(),
            Some("-c work_mem=4MB -c synchronous_commit=on -c idle_in_transaction_session_timeout=60s")
        );
    }

    /// A test CA and a certificate it issued for `localhost` only.
    struct Pki {
        ca_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "invite-server test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// Whether a client connecting with `url` to a loopback server that
    /// speaks PostgreSQL's TLS request and then presents `pki`'s certificate
    /// completes the TLS handshake (the server then hangs up: no database).
    async fn handshake(pki: &Pki, url: &str) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            // The SSLRequest: length 8, code 80877103.
            let mut request = [0u8; 8];
            socket.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
            socket.write_all(b"S").await.unwrap();
            acceptor.accept(socket).await.is_ok()
        });
        let parsed = PostgresUrl::parse(&url.replace("{port}", &port.to_string())).unwrap();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(parsed.tls_config().unwrap());
        // Fails either way: the server never answers the startup message.
        let refused = parsed.config.connect(tls).await.err();
        let completed = server.await.unwrap();
        if !completed {
            // Our side refused the certificate: that is no passing fault.
            let refused = refused.expect("a refused handshake is an error");
            assert!(!super::super::rows::is_transient(&refused), "{refused}");
        }
        completed
    }

    #[tokio::test]
    async fn each_sslmode_checks_the_servers_certificate_as_libpq_does() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let ca = ca.display().to_string();
        for (url, completes) in [
            // Encrypted, but any certificate will do.
            ("postgres://u@127.0.0.1:{port}/d?sslmode=require", true),
            ("postgres://u@127.0.0.1:{port}/d?sslmode=prefer", true),
            // Our CA and the name the certificate gives.
            (
                &format!("postgres://u@localhost:{{port}}/d?sslmode=verify-full&sslrootcert={ca}"),
                true,
            ),
            // Our CA but an address the certificate does not name.
            (
                &format!("postgres://u@127.0.0.1:{{port}}/d?sslmode=verify-full&sslrootcert={ca}"),
                false,
            ),
            (
                &format!("postgres://u@127.0.0.1:{{port}}/d?sslmode=verify-ca&sslrootcert={ca}"),
                true,
            ),
            // Not a CA of the Web PKI.
            ("postgres://u@localhost:{port}/d?sslmode=verify-full", false),
            ("postgres://u@localhost:{port}/d?sslmode=verify-ca", false),
        ] {
            assert_eq!(handshake(&pki, url).await, completes, "{url}");
        }
    }
}
