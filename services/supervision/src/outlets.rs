//! Where replies leave supervision: a pluggable outlet per contact method. A log outlet and
//! an HTTP webhook outlet ship; an SMS gateway or a letter-printing service plugs in the same
//! way (implement [`Outlet`], name it in `[supervision.outlets]`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Serialize;

/// One message to one reporter. It holds personal data (the address): outlets use it to
/// send and must not log it.
#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    /// The delivery's id (an idempotency key for the receiver: a retry after a lost answer
    /// sends the same id again).
    pub delivery: String,
    /// "replies/{id}".
    pub reply: String,
    /// "cases/{id}".
    pub case: String,
    /// "phone", "letter", "online" or "face_to_face".
    pub method: String,
    /// The reporter's name.
    pub name: String,
    /// The phone number, postal address or online address the method needs ("" face to face).
    pub address: String,
    /// The message.
    pub text: String,
}

/// A way out.
pub trait Outlet: Send + Sync + std::fmt::Debug {
    /// Its name, as configured.
    fn name(&self) -> &str;
    /// Sends one message; an error is retried later with backoff.
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), String>>;
}

/// Writes each message to the service log (the address left out): for installations whose
/// staff read replies out from the log, and for trying the system.
#[derive(Debug, Default)]
pub struct LogOutlet;

impl Outlet for LogOutlet {
    fn name(&self) -> &str {
        "log"
    }
    fn send<'a>(&'a self, m: &'a Outgoing) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tracing::info!(
                delivery = %m.delivery,
                case = %m.case,
                method = %m.method,
                text = %m.text,
                "reply to a resident"
            );
            Ok(())
        })
    }
}

/// POSTs each message as JSON to a URL (`http://` only: put a TLS-terminating proxy in front
/// for anything beyond the host); any 2xx answer counts as delivered.
#[derive(Debug)]
pub struct WebhookOutlet {
    url: http::Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
    timeout: Duration,
}

impl WebhookOutlet {
    /// A webhook to `url`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("webhook_url: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err("webhook_url must be an http:// URL with a host".into());
        }
        Ok(Self {
            url: uri,
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        })
    }
}

impl Outlet for WebhookOutlet {
    fn name(&self) -> &str {
        "webhook"
    }
    fn send<'a>(&'a self, m: &'a Outgoing) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = serde_json::to_vec(m).map_err(|e| e.to_string())?;
            let request = http::Request::post(self.url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", m.delivery.as_str())
                .body(Full::new(bytes::Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| "the webhook did not answer in time".to_string())?
                .map_err(|e| format!("webhook: {e}"))?;
            let status = response.status();
            // Read the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the webhook answered {status}"))
            }
        })
    }
}

/// The outlet for each contact method.
#[derive(Debug, Clone)]
pub struct Outlets {
    by_method: BTreeMap<i32, Arc<dyn Outlet>>,
    fallback: Arc<dyn Outlet>,
}

impl Outlets {
    /// Outlets as configured: `choice` maps a method slug to "log" or "webhook".
    pub fn from_config(
        choice: &BTreeMap<String, String>,
        webhook_url: Option<&str>,
    ) -> Result<Self, String> {
        let log: Arc<dyn Outlet> = Arc::new(LogOutlet);
        let mut webhook: Option<Arc<dyn Outlet>> = None;
        let mut by_method = BTreeMap::new();
        for (method, outlet) in choice {
            let wire = method_wire(method)
                .ok_or_else(|| format!("supervision.outlets: unknown method {method:?}"))?;
            let chosen = match outlet.as_str() {
                "log" => log.clone(),
                "webhook" => match &webhook {
                    Some(w) => w.clone(),
                    None => {
                        let url = webhook_url.ok_or(
                            "supervision.outlets names the webhook but webhook_url is not set",
                        )?;
                        let w: Arc<dyn Outlet> =
                            Arc::new(WebhookOutlet::new(url, Duration::from_secs(10))?);
                        webhook = Some(w.clone());
                        w
                    }
                },
                other => return Err(format!("supervision.outlets: unknown outlet {other:?}")),
            };
            by_method.insert(wire, chosen);
        }
        Ok(Self {
            by_method,
            fallback: log,
        })
    }

    /// Uses `outlet` for every method (tests and embedders).
    pub fn all(outlet: Arc<dyn Outlet>) -> Self {
        Self {
            by_method: BTreeMap::new(),
            fallback: outlet,
        }
    }

    /// The outlet for a method.
    pub fn for_method(&self, method: i32) -> &Arc<dyn Outlet> {
        self.by_method.get(&method).unwrap_or(&self.fallback)
    }
}

/// A contact method's slug.
pub fn method_slug(method: i32) -> &'static str {
    match method {
        1 => "phone",
        2 => "letter",
        3 => "online",
        4 => "face_to_face",
        _ => "unspecified",
    }
}

fn method_wire(slug: &str) -> Option<i32> {
    (1..=4).find(|m| method_slug(*m) == slug)
}
