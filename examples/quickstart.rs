//! Identify a person and track an event through the default stack.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `CUSTOMERIO_SITE_ID` and `CUSTOMERIO_API_KEY` set (and `CUSTOMERIO_REGION=eu` for an EU
//! workspace) it talks to the real Customer.io over HTTPS; otherwise it starts the in-process
//! mock and shows what the mock recorded.

use std::error::Error;

use pacer::customerio::{Client, Credentials, Event, Region, Roots};
use pacer_mock::{MockConfig, MockServer};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let site_id = std::env::var("CUSTOMERIO_SITE_ID").ok();
    let api_key = std::env::var("CUSTOMERIO_API_KEY").ok();
    let (client, mock) = match (site_id, api_key) {
        (Some(site_id), Some(api_key)) => {
            let region = match std::env::var("CUSTOMERIO_REGION").as_deref() {
                Ok("eu") => Region::Eu,
                _ => Region::Us,
            };
            println!("Talking to Customer.io ({region:?}) as site {site_id}");
            let client = Client::builder()
                .region(region)
                .credentials(Credentials::track(site_id, api_key))
                .build_https(Roots::Webpki)?;
            (client, None)
        }
        _ => {
            let mock = MockServer::start(MockConfig::default()).await?;
            println!(
                "No CUSTOMERIO_SITE_ID/CUSTOMERIO_API_KEY: using the mock at {}",
                mock.base_url()
            );
            let client = Client::builder()
                .base_url(&mock.base_url())
                .credentials(Credentials::track("site-id", "track-key"))
                .build_https(Roots::Webpki)?;
            (client, Some(mock))
        }
    };

    let attributes = json!({"email": "ada@example.com", "plan": "pro"});
    client
        .identify("quickstart-ada", attributes.as_object().expect("an object"))
        .await?;
    // The event gets a ULID id, so a retried request is never counted twice.
    client
        .track(
            "quickstart-ada",
            Event::new("signed_up").data(json!({"source": "quickstart"})),
        )
        .await?;
    println!(
        "identify and track sent; limiter: {:?}",
        client.limiter().stats()
    );

    if let Some(mock) = mock {
        let person = mock.ledger().person("quickstart-ada").expect("identified");
        println!("mock has the person: {:?}", person.attributes);
        println!("mock has the events: {:?}", mock.ledger().events());
    }
    Ok(())
}
