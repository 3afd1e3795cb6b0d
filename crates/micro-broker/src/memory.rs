//! The `memory` broker: one process, for tests and single-binary programs.
//! `publish` runs every handler (one per broadcast subscription, one per
//! queue group) and returns when they have answered, with their refusals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::dispatch::{Gate, deliver};
use crate::{
    Broker, BrokerObserver, Error, Event, Handler, Message, SubscribeOptions, Subscription,
    Undelivered, addressed, check_subscription,
};

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    topics: Mutex<HashMap<String, Vec<Arc<Sub>>>>,
    observer: Option<Arc<dyn BrokerObserver>>,
}

struct Sub {
    id: String,
    queue: Option<String>,
    handler: Arc<dyn Handler>,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for Sub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sub")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    /// A broker whose publishes and deliveries `observer` sees.
    pub fn with_observer(observer: Arc<dyn BrokerObserver>) -> MemoryBroker {
        MemoryBroker {
            shared: Arc::new(Shared {
                topics: Mutex::default(),
                observer: Some(observer),
            }),
        }
    }
}

impl Shared {
    fn topics(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Sub>>>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, topic: &str, id: &str) {
        let mut topics = self.topics();
        if let Some(subs) = topics.get_mut(topic) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                topics.remove(topic);
            }
        }
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        let message = addressed("memory", topic, message, self.shared.observer.as_deref())?;
        let subs = self.shared.topics().get(topic).cloned().unwrap_or_default();
        // Broadcast subscriptions each, and each queue group's members in a
        // random order (the first that is open takes the message).
        let mut targets: Vec<Vec<Arc<Sub>>> = Vec::new();
        let mut groups: HashMap<&str, usize> = HashMap::new();
        for sub in &subs {
            match &sub.queue {
                None => targets.push(vec![sub.clone()]),
                Some(queue) => match groups.get(queue.as_str()) {
                    Some(&i) => targets[i].push(sub.clone()),
                    None => {
                        groups.insert(queue, targets.len());
                        targets.push(vec![sub.clone()]);
                    }
                },
            }
        }
        let observer = self.shared.observer.as_deref();
        let runs = targets.into_iter().map(|mut members| {
            fastrand::shuffle(&mut members);
            let message = message.clone();
            async move {
                let target = match &members[0].queue {
                    Some(queue) => format!("queue {queue}"),
                    None => members[0].id.clone(),
                };
                for sub in &members {
                    let Some(pass) = sub.gate.enter() else {
                        continue;
                    };
                    let event = Event::new(topic, message);
                    let outcome = deliver("memory", &*sub.handler, event, pass, observer).await;
                    return outcome.failure().map(|reason| Undelivered {
                        target,
                        reason,
                        queued: false,
                    });
                }
                Some(Undelivered {
                    target,
                    reason: "unsubscribing".into(),
                    queued: false,
                })
            }
        });
        let failures: Vec<Undelivered> = futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some(observer) = observer {
            observer.published("memory", topic, failures.is_empty());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Delivery(failures))
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<Subscription, Error> {
        check_subscription(topic, &options)?;
        let id = format!("{topic}-{}", uuid::Uuid::new_v4());
        let sub = Arc::new(Sub {
            id: id.clone(),
            queue: options.queue.clone(),
            handler,
            gate: Arc::new(Gate::default()),
        });
        self.shared
            .topics()
            .entry(topic.to_string())
            .or_default()
            .push(sub.clone());
        let stop = MemoryStop {
            shared: Arc::downgrade(&self.shared),
            topic: topic.to_string(),
            sub,
        };
        Ok(Subscription::new(topic, options.queue, id, Box::new(stop)))
    }
}

struct MemoryStop {
    shared: Weak<Shared>,
    topic: String,
    sub: Arc<Sub>,
}

#[async_trait::async_trait]
impl crate::Stop for MemoryStop {
    async fn stop(&self) {
        self.stop_now();
        self.sub.gate.drain().await;
    }

    fn stop_now(&self) {
        self.sub.gate.close();
        if let Some(shared) = self.shared.upgrade() {
            shared.remove(&self.topic, &self.sub.id);
        }
    }
}
