//! AMQP sink (RabbitMQ) through lapin: persistent messages with publisher confirms, so an
//! envelope counts as delivered only once the broker has acknowledged it.
//!
//! A batch is published whole on one confirm-mode channel and then every confirm is awaited:
//! many confirms in flight instead of one round trip per envelope. Publishes are `mandatory`
//! by default, and a message the broker returns as unroutable is a permanent failure (a dead
//! letter naming the broker's reason), never a silent drop.
//!
//! The connection is opened on first use and opened again after it or its channel is lost; the
//! dispatcher's retry backoff paces the attempts. Nothing here retries on its own.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use tokio::sync::Mutex;

use super::{Delivery, SinkError, render, render_headers};
use crate::template::{JsonContext, Template};

/// AMQP's persistent delivery mode: the broker writes the message to disk before confirming
/// it (for a durable queue).
const PERSISTENT: u8 = 2;
/// How long a batch may take from publishing to its last confirm. A broker under a memory or
/// disk alarm blocks publishers; past this the connection is dropped and the batch tried again.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct AmqpSinkConfig {
    /// `amqp://user:password@host:port/vhost` or `amqps://…`.
    pub url: String,
    /// The exchange to publish to; empty is the default exchange (routing key = queue name).
    pub exchange: Template,
    pub routing_key: Template,
    /// Declare the exchange on connecting, when set.
    pub declare_exchange: Option<ExchangeDeclaration>,
    /// Have the broker return messages no queue is bound for; they become dead letters.
    pub mandatory: bool,
    /// Extra message headers, each value a template; the standard ones (kind, domain, source,
    /// dedupe_key) are always sent.
    pub headers: Vec<(String, Template)>,
}

/// An exchange to declare before publishing (its name is the sink's `exchange`, which must
/// then be a literal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeDeclaration {
    /// `direct`, `fanout`, `topic` or `headers`.
    pub kind: String,
    pub durable: bool,
}

pub struct AmqpSink {
    config: AmqpSinkConfig,
    /// The open connection and its confirm-mode channel; one delivery at a time uses them.
    /// Boxed: a connection and channel are large, and `Sink` holds one sink of each kind.
    link: Mutex<Option<Box<Link>>>,
    connected: AtomicBool,
}

struct Link {
    /// Kept so the connection lives as long as its channel.
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl AmqpSink {
    pub fn new(config: AmqpSinkConfig) -> AmqpSink {
        AmqpSink {
            config,
            link: Mutex::new(None),
            connected: AtomicBool::new(false),
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.link.try_lock().map_or(true, |link| {
                link.as_ref().is_some_and(|link| link.is_open())
            })
    }

    /// Connects when not connected.
    ///
    /// # Errors
    /// Transient: the broker cannot be reached, refuses the login or the exchange declaration.
    pub async fn check(&self) -> Result<(), SinkError> {
        // A delivery in progress holds the link and reports its own outcome; waiting for it
        // would only make a long batch look like an unreachable broker.
        let Ok(mut link) = self.link.try_lock() else {
            return Ok(());
        };
        self.open(&mut link).await.map(|_| ())
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        let mut link = self.link.lock().await;
        let channel = match self.open(&mut link).await {
            Ok(channel) => channel.clone(),
            Err(err) => return batch.iter().map(|_| Err(err.clone())).collect(),
        };
        // Publish everything first, then await the confirms: the broker confirms in bulk.
        // The publishes run together: each one's frames are queued (in batch order) on its
        // first poll, and lapin's writer then sends them in large writes, instead of one
        // write and one wake-up per message.
        let publishes: Vec<BoxFuture<'_, Result<PublisherConfirm, SinkError>>> = batch
            .iter()
            .map(|delivery| self.publish(&channel, delivery).boxed())
            .collect();
        // A broker under a memory or disk alarm stops reading; the deadline covers that too.
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        let Ok(published) =
            tokio::time::timeout_at(deadline, futures::future::join_all(publishes)).await
        else {
            self.forget(&mut link);
            let reason = format!(
                "the broker took no messages within {} s",
                CONFIRM_TIMEOUT.as_secs()
            );
            return batch
                .iter()
                .map(|_| Err(SinkError::transient(reason.clone())))
                .collect();
        };
        let mut results: Vec<Result<(), SinkError>> = Vec::with_capacity(batch.len());
        let mut pending: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(batch.len());
        let mut lost = false;
        for (index, outcome) in published.into_iter().enumerate() {
            match outcome {
                Ok(confirm) => {
                    results.push(Ok(()));
                    pending.push((index, confirm));
                }
                Err(err) => {
                    lost |= err.is_retryable();
                    results.push(Err(err));
                }
            }
        }
        for (index, confirm) in pending {
            let Ok(confirmed) = tokio::time::timeout_at(deadline, confirm).await else {
                lost = true;
                results[index] = Err(SinkError::transient(format!(
                    "the broker did not confirm within {} s",
                    CONFIRM_TIMEOUT.as_secs()
                )));
                continue;
            };
            let outcome = match confirmed {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                    Err(SinkError::permanent(format!(
                        "the broker returned the message as unroutable: {} {} (exchange `{}`, routing key `{}`)",
                        returned.reply_code,
                        returned.reply_text,
                        returned.delivery.exchange,
                        returned.delivery.routing_key,
                    )))
                }
                Ok(Confirmation::Nack(None)) => Err(SinkError::transient(
                    "the broker refused the message (nack); it may be out of resources",
                )),
                Ok(Confirmation::NotRequested) => Err(SinkError::transient(
                    "the channel is not in confirm mode; the broker did not confirm",
                )),
                Err(err) => {
                    lost = true;
                    Err(SinkError::transient(format!(
                        "the AMQP connection failed before the broker confirmed: {err}"
                    )))
                }
            };
            results[index] = outcome;
        }
        if lost || !link.as_ref().is_some_and(|link| link.is_open()) {
            self.forget(&mut link);
        }
        results
    }

    async fn publish(
        &self,
        channel: &Channel,
        delivery: &Delivery,
    ) -> Result<PublisherConfirm, SinkError> {
        let envelope = JsonContext::new(&delivery.envelope);
        let exchange = render("exchange", &self.config.exchange, &envelope)?;
        let routing_key = render("routing_key", &self.config.routing_key, &envelope)?;
        let extra_headers = render_headers(&self.config.headers, &envelope)?;
        let facts = &delivery.facts;
        let mut headers = FieldTable::default();
        for (name, value) in facts.headers() {
            headers.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        for (name, value) in extra_headers {
            headers.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(facts.id.as_str()))
            .with_content_type(ShortString::from(delivery.payload.content_type.as_str()))
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(u64::try_from(facts.received_at_seconds()).unwrap_or_default())
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            ..BasicPublishOptions::default()
        };
        channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                options,
                &delivery.payload.bytes,
                properties,
            )
            .await
            .map_err(|err| SinkError::transient(format!("publishing to AMQP: {err}")))
    }

    /// The open channel, connecting first when there is none or it was lost.
    async fn open<'a>(&self, link: &'a mut Option<Box<Link>>) -> Result<&'a Channel, SinkError> {
        if !link.as_ref().is_some_and(|link| link.is_open()) {
            self.forget(link);
            let opened = self.connect().await.inspect_err(|err| {
                tracing::warn!(error = %err, "cannot connect to the AMQP broker");
            })?;
            *link = Some(Box::new(opened));
            self.connected.store(true, Ordering::Relaxed);
        }
        Ok(&link.as_ref().expect("opened above").channel)
    }

    fn forget(&self, link: &mut Option<Box<Link>>) {
        self.connected.store(false, Ordering::Relaxed);
        if let Some(old) = link.take() {
            // Closing politely may wait on a dead socket; dropping is enough to free it.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    old.connection.close(0, ShortString::from("reconnecting")),
                )
                .await;
            });
        }
    }

    async fn connect(&self) -> Result<Link, SinkError> {
        let unreachable = |step: &str, err: lapin::Error| {
            SinkError::transient(format!("AMQP {step} ({}): {err}", redact(&self.config.url)))
        };
        let connection = Connection::connect(&self.config.url, ConnectionProperties::default())
            .await
            .map_err(|err| unreachable("connect", err))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|err| unreachable("opening a channel", err))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|err| unreachable("enabling publisher confirms", err))?;
        if let Some(declaration) = &self.config.declare_exchange {
            let kind = match declaration.kind.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                other => ExchangeKind::Custom(other.to_owned()),
            };
            let options = ExchangeDeclareOptions {
                durable: declaration.durable,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    ShortString::from(self.config.exchange.source()),
                    kind,
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(|err| unreachable("declaring the exchange", err))?;
        }
        Ok(Link {
            connection,
            channel,
        })
    }
}

/// The URL without its password, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    if path.is_empty() && !rest.contains('/') {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(
            redact("amqps://u@h/"),
            "amqps://u@h/".replace("u@", "u:***@")
        );
    }
}
