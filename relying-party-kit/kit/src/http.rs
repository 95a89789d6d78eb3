//! The HTTP client the kit talks to the provider with: reqwest 0.13 on rustls with ring,
//! adapted to openidconnect's [`AsyncHttpClient`].
//!
//! Invariants:
//! - Redirects are never followed (openidconnect's guidance against SSRF: a provider that
//!   answers a back-channel request with a redirect could point the relying party's server at
//!   an internal address). A 3xx answer is an error.
//! - Plain `http://` is refused unless [`HttpClientBuilder::dangerous_allow_plain_http`] was
//!   called (tests with a local fake provider).
//! - The crypto provider is chosen here (ring), never read from process-wide state, so building
//!   a client cannot panic for want of `CryptoProvider::install_default`.
//! - Response bodies are capped ([`MAX_BODY_BYTES`]): discovery, JWKS, token and userinfo
//!   answers are small.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse, http};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The largest response body the client reads (1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an HTTP exchange with the provider failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request could not be sent or the response could not be read (connection, TLS,
    /// timeout, refused plain HTTP).
    #[error("HTTP request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// The provider answered with a redirect, which the kit never follows.
    #[error("the provider answered {0} (a redirect); redirects are not followed")]
    Redirect(http::StatusCode),
    /// The response body exceeded [`MAX_BODY_BYTES`].
    #[error("the response body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// openidconnect produced a request reqwest cannot represent.
    #[error("the request could not be built: {0}")]
    Request(String),
}

/// TLS and transport settings for talking to the provider, turned into an [`HttpClient`] by
/// [`HttpClientBuilder::build`].
#[derive(Clone)]
pub struct HttpClientBuilder {
    extra_roots: Vec<CertificateDer<'static>>,
    only_extra_roots: bool,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    timeout: Duration,
    allow_plain_http: bool,
}

impl fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("extra_roots", &self.extra_roots.len())
            .field("only_extra_roots", &self.only_extra_roots)
            .field("client_identity", &self.identity.is_some())
            .field("timeout", &self.timeout)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

impl Default for HttpClientBuilder {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            only_extra_roots: false,
            identity: None,
            timeout: DEFAULT_TIMEOUT,
            allow_plain_http: false,
        }
    }
}

impl HttpClientBuilder {
    /// Trust the CA certificates in `pem` for the provider's TLS, in addition to the
    /// platform's roots (or instead of them, see [`Self::only_extra_roots`]). Use it for a
    /// test PKI or a private CA in front of the IdP.
    pub fn extra_root_pem(mut self, pem: &[u8]) -> Result<Self, crate::Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::Config(format!("extra root PEM: {e}")))?;
        if certs.is_empty() {
            return Err(crate::Error::Config(
                "extra root PEM holds no CERTIFICATE block".into(),
            ));
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Trust only the roots given with [`Self::extra_root_pem`], not the platform's.
    pub fn only_extra_roots(mut self) -> Self {
        self.only_extra_roots = true;
        self
    }

    /// Present this client certificate (chain, leaf first) and private key when the provider
    /// asks for one: RFC 8705 `tls_client_auth` at the token endpoint.
    pub fn client_identity_pem(
        mut self,
        cert_chain_pem: &[u8],
        private_key_pem: &[u8],
    ) -> Result<Self, crate::Error> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::Config(format!("client certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(crate::Error::Config(
                "client certificate PEM holds no CERTIFICATE block".into(),
            ));
        }
        // The key's parse error is not echoed: it could quote key material.
        let key = PrivateKeyDer::from_pem_slice(private_key_pem).map_err(|_| {
            crate::Error::Config("client private key PEM holds no usable private key".into())
        })?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// Give up on a request after `timeout` (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Allow `http://` provider URLs. Only for tests against a local fake provider: without
    /// TLS the ID token's origin and the client secret are unprotected.
    pub fn dangerous_allow_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
        self
    }

    /// The client. Fails on an unusable TLS configuration, never panics.
    pub fn build(self) -> Result<HttpClient, crate::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = self.tls_config(provider)?;
        let has_identity = self.identity.is_some();
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!self.allow_plain_http)
            .timeout(self.timeout)
            .build()
            .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))?;
        Ok(HttpClient {
            inner,
            has_identity,
        })
    }

    fn tls_config(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<rustls::ClientConfig, crate::Error> {
        let tls_err = |e: rustls::Error| crate::Error::Config(format!("TLS: {e}"));
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = if self.only_extra_roots {
            if self.extra_roots.is_empty() {
                return Err(crate::Error::Config(
                    "only_extra_roots without any extra root".into(),
                ));
            }
            let mut roots = RootCertStore::empty();
            for cert in &self.extra_roots {
                roots.add(cert.clone()).map_err(tls_err)?;
            }
            builder.with_root_certificates(roots)
        } else {
            let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.extra_roots.iter().cloned(),
                provider,
            )
            .map_err(tls_err)?;
            // Not a weakening: the platform verifier is WebPKI over the system roots plus ours.
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(tls_err)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The kit's HTTP client: reqwest without redirects, adapted to openidconnect.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    has_identity: bool,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("client_identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A builder with the platform's roots, no client certificate and HTTPS only.
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// Whether a client certificate is configured (needed for `tls_client_auth`).
    pub fn has_client_identity(&self) -> bool {
        self.has_identity
    }

    pub(crate) async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let mut response = self
            .inner
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(HttpError::Transport)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(HttpError::Redirect(status));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(HttpError::BodyTooLarge);
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HttpError::Transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(HttpError::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| HttpError::Request(e.to_string()))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The adapter that lets openidconnect's requests run on reqwest 0.13.
impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}
