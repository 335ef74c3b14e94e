//! A decoded event that can cross threads without its record.
//!
//! Decoding is the most expensive step of the record path, and it needs no state, so
//! the processor runs it on another thread than the stateful steps. An [`Event`]
//! borrows its strings from the record's bytes; a [`Detached`] event stores them as
//! byte ranges of the record instead (or owns them, when the JSON string had escapes
//! and its text differs from its bytes), and [`Detached::attach`] borrows them again
//! from the record on the other side. Nothing is copied for the common case.

use std::borrow::Cow;
use std::ops::Range;

use crate::event::{Channel, DeliveryType, Event, EventType, Item};

/// A string of a detached event.
#[derive(Debug, Clone, PartialEq)]
enum Text {
    /// These bytes of the record.
    At(Range<u32>),
    /// Unescaped text that is not in the record as is.
    Own(Box<str>),
}

impl Text {
    fn detach(s: Cow<'_, str>, record: &[u8]) -> Text {
        if let Cow::Borrowed(b) = &s {
            // Where the borrowed text sits in the record: plain address arithmetic.
            let start = (b.as_ptr() as usize).wrapping_sub(record.as_ptr() as usize);
            if let Some(end) = start.checked_add(b.len())
                && end <= record.len()
                && let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end))
            {
                return Text::At(start..end);
            }
        }
        Text::Own(s.into_owned().into_boxed_str())
    }

    /// The text again; `None` if `record` is not the record it was detached from.
    fn attach<'a>(&'a self, record: &'a [u8]) -> Option<Cow<'a, str>> {
        Some(Cow::Borrowed(match self {
            // Only the field's bytes are checked, not the whole record again.
            Text::At(r) => {
                std::str::from_utf8(record.get(r.start as usize..r.end as usize)?).ok()?
            }
            Text::Own(s) => s,
        }))
    }
}

/// A detached [`Event`]; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Detached {
    event_id: Text,
    event_type: EventType,
    event_time: i64,
    order_id: Option<Text>,
    store_id: Option<Text>,
    rider_id: Option<Text>,
    customer_id: Option<Text>,
    channel: Option<Channel>,
    delivery_type: Option<DeliveryType>,
    total_cents: Option<i64>,
    items: Option<Vec<(Text, i64, i64)>>,
    lat: Option<f64>,
    lon: Option<f64>,
    speed_mps: Option<f64>,
    reason: Option<Text>,
}

impl Detached {
    /// Detaches `ev`, decoded from `record`, from the record's lifetime.
    pub fn new(ev: Event<'_>, record: &[u8]) -> Detached {
        let text = |s: Option<Cow<'_, str>>| s.map(|s| Text::detach(s, record));
        Detached {
            event_id: Text::detach(ev.event_id, record),
            event_type: ev.event_type,
            event_time: ev.event_time,
            order_id: text(ev.order_id),
            store_id: text(ev.store_id),
            rider_id: text(ev.rider_id),
            customer_id: text(ev.customer_id),
            channel: ev.channel,
            delivery_type: ev.delivery_type,
            total_cents: ev.total_cents,
            items: ev.items.map(|items| {
                items
                    .into_iter()
                    .map(|it| {
                        (
                            Text::detach(it.product_id, record),
                            it.qty,
                            it.unit_price_cents,
                        )
                    })
                    .collect()
            }),
            lat: ev.lat,
            lon: ev.lon,
            speed_mps: ev.speed_mps,
            reason: text(ev.reason),
        }
    }

    /// The event again, borrowing from `record`, the bytes it was detached from.
    /// `None` if they are not (a text range that is out of bounds or not UTF-8).
    pub fn attach<'a>(&'a self, record: &'a [u8]) -> Option<Event<'a>> {
        // Some(None): absent; None: not this record.
        let text = |t: &'a Option<Text>| match t {
            None => Some(None),
            Some(t) => t.attach(record).map(Some),
        };
        Some(Event {
            event_id: self.event_id.attach(record)?,
            event_type: self.event_type,
            event_time: self.event_time,
            order_id: text(&self.order_id)?,
            store_id: text(&self.store_id)?,
            rider_id: text(&self.rider_id)?,
            customer_id: text(&self.customer_id)?,
            channel: self.channel,
            delivery_type: self.delivery_type,
            total_cents: self.total_cents,
            items: match &self.items {
                None => None,
                Some(items) => Some(
                    items
                        .iter()
                        .map(|(product_id, qty, unit_price_cents)| {
                            Some(Item {
                                product_id: product_id.attach(record)?,
                                qty: *qty,
                                unit_price_cents: *unit_price_cents,
                            })
                        })
                        .collect::<Option<Vec<_>>>()?,
                ),
            },
            lat: self.lat,
            lon: self.lon,
            speed_mps: self.speed_mps,
            reason: text(&self.reason)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    #[test]
    fn detached_and_attached_again_is_the_same_event() {
        let records = [
            r#"{"event_id":"e1","event_type":"order_placed","event_time":"2026-11-21T12:00:00Z","order_id":"o\u0031","store_id":"s","customer_id":"c","items":[{"product_id":"p\"q","qty":2,"unit_price_cents":5}],"total_cents":10,"channel":"online"}"#,
            "\u{feff}{\"event_id\":\"é\",\"event_type\":\"rider_location\",\"event_time\":\"2026-11-21T12:00:00+01:00\",\"rider_id\":\"r\",\"lat\":1.5,\"lon\":-2,\"speed_mps\":3}",
            r#"{"event_id":"e3","event_type":"order_cancelled","event_time":"2026-11-21T12:00:00Z","order_id":"o","store_id":"s","reason":"no\nrider"}"#,
        ];
        for record in records {
            let ev = decode(record.as_bytes()).unwrap();
            let detached = Detached::new(ev.clone(), record.as_bytes());
            // Unescaped strings stay in the record: nothing copied.
            assert!(matches!(detached.event_id, Text::At(_)), "{record}");
            // It crosses threads on its own.
            let detached = std::thread::spawn(move || detached).join().unwrap();
            assert_eq!(detached.attach(record.as_bytes()), Some(ev), "{record}");
            assert_eq!(detached.attach(b"{}"), None, "not its record");
        }
    }
}
