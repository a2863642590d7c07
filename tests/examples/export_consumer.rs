//! Reads what Parley exports to NATS JetStream (README, "Exporting the timeline to NATS"):
//! every item of one tenant's conversations, from the start of the stream, with the headers
//! an indexer needs.
//!
//! ```sh
//! cargo run -p parley-tests --example export_consumer -- nats://127.0.0.1:4222 acme
//! ```

use futures::StreamExt;
use prost::Message as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    // The tenant as a subject token: bytes other than letters, digits, '-' and '_' as %XX.
    let tenant =
        parley_server::export::subject_token(&args.next().unwrap_or_else(|| "acme".into()));
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await?);
    let stream = js.get_stream("PARLEY").await?;
    // An ordered consumer: no state kept on the server, redelivered in order from the start.
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("parley.{tenant}.>"),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let item = parley::pb::TimelineItem::decode(message.payload.as_ref())?;
        println!(
            "{} {} {} {:?}",
            header("Nats-Msg-Id"),
            header("Parley-Item"),
            header("Parley-Visibility"),
            item.item
        );
    }
    Ok(())
}
