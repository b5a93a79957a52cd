//! A ready HTTPS client for the real service: hyper-util's pooled client over rustls, HTTP/1.1
//! keep-alive and HTTP/2 (negotiated by ALPN), plain HTTP allowed for the mock.

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

use crate::error::Error;
use crate::requests::Body;
use crate::timeouts::DEFAULT_CONNECT_TIMEOUT;

/// The HTTP service [`ClientBuilder::build_https`](crate::ClientBuilder::build_https) uses.
pub type HttpsClient = PooledClient<HttpsConnector<HttpConnector>, Body>;

/// Which certificate authorities to trust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roots {
    /// Mozilla's roots compiled in (`webpki-roots`): works in scratch containers (the default).
    #[default]
    Webpki,
    /// The operating system's store (`rustls-native-certs`): for corporate CAs.
    Native,
}

/// A pooled HTTPS client trusting `roots`, that gives up opening a connection after 10 s
/// (`DEFAULT_CONNECT_TIMEOUT`).
///
/// # Errors
/// [`Error::InvalidInput`] when [`Roots::Native`] finds no usable certificate store.
pub fn https_client(roots: Roots) -> Result<HttpsClient, Error> {
    https_client_with(roots, Some(DEFAULT_CONNECT_TIMEOUT))
}

/// As [`https_client`], giving up opening a TCP connection after `connect_timeout` (`None`:
/// the operating system's own, often over two minutes).
///
/// # Errors
/// [`Error::InvalidInput`] when [`Roots::Native`] finds no usable certificate store.
pub fn https_client_with(
    roots: Roots,
    connect_timeout: Option<Duration>,
) -> Result<HttpsClient, Error> {
    let builder = HttpsConnectorBuilder::new();
    let builder = match roots {
        Roots::Webpki => builder.with_webpki_roots(),
        Roots::Native => builder.with_native_roots().map_err(|error| {
            Error::InvalidInput(format!("no usable system certificate store: {error}"))
        })?,
    };
    let mut http = HttpConnector::new();
    // hyper-rustls' own default connector, plus the bound: a host that drops SYNs would
    // otherwise hold a request for the OS's timeout.
    http.enforce_http(false);
    http.set_connect_timeout(connect_timeout);
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(PooledClient::builder(TokioExecutor::new()).build(connector))
}
