//! The cross-node seam: two nodes linked by an in-process broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use common::*;
use tidings_protocol::Notification;
use tidings_server::Tidings;
use tidings_server::broker::{Broker, BrokerError};
use tidings_server::store::Publication;

/// Forwards to one peer node and records presence announcements.
#[derive(Default)]
struct Link {
    peer: OnceLock<Tidings>,
    presence: Mutex<Vec<(String, String, bool)>>,
}

#[async_trait]
impl Broker for Link {
    async fn publish(&self, publication: &Arc<Publication>) -> Result<(), BrokerError> {
        let peer = self
            .peer
            .get()
            .ok_or(BrokerError::Unavailable("not linked".into()))?;
        peer.deliver_remote(publication).await;
        Ok(())
    }

    async fn presence(
        &self,
        channel: &str,
        user_id: &str,
        joined: bool,
    ) -> Result<(), BrokerError> {
        self.presence
            .lock()
            .unwrap()
            .push((channel.into(), user_id.into(), joined));
        Ok(())
    }
}

#[tokio::test]
async fn a_publication_on_one_node_reaches_subscribers_on_the_other() {
    let a_link = Arc::new(Link::default());
    let b_link = Arc::new(Link::default());
    let a = start_with(Tidings::builder().config(config()).broker(a_link.clone())).await;
    let b = start_with(Tidings::builder().config(config()).broker(b_link.clone())).await;
    a_link.peer.set(b.tidings.clone()).ok();
    b_link.peer.set(a.tidings.clone()).ok();

    let mut on_b = b.connect("7").await;
    on_b.subscribe("room").await;
    assert_eq!(
        b_link.presence.lock().unwrap().clone(),
        vec![
            ("user:7".into(), "7".into(), true),
            ("room".into(), "7".into(), true)
        ]
    );

    let note = Notification {
        message: "from a".into(),
        ..Default::default()
    };
    let published = a.tidings.publish("room", &note).await.unwrap();
    assert_eq!((published.offset, published.delivered), (Some(1), 0));
    let got = on_b.recv().await;
    assert_eq!(message(&got).offset, Some(1));
    assert_eq!(
        message(&got)
            .event
            .decode::<Notification>()
            .unwrap()
            .unwrap(),
        note
    );

    drop(on_b);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        b_link
            .presence
            .lock()
            .unwrap()
            .contains(&("room".into(), "7".into(), false))
    );
}
