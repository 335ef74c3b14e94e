//! The five event types of the wire format (CONTRACT §1) as Rust values.
//!
//! [`Event`] borrows its strings from the record it was decoded from, so decoding a
//! batch of records allocates only for strings with escapes and for item lists.

use std::borrow::Cow;
use std::fmt;

/// The `event_type` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `order_placed`
    OrderPlaced,
    /// `order_picked_up`
    OrderPickedUp,
    /// `order_delivered`
    OrderDelivered,
    /// `order_cancelled`
    OrderCancelled,
    /// `rider_location`
    RiderLocation,
}

impl EventType {
    /// All event types, in the contract's order.
    pub const ALL: [EventType; 5] = [
        EventType::OrderPlaced,
        EventType::OrderPickedUp,
        EventType::OrderDelivered,
        EventType::OrderCancelled,
        EventType::RiderLocation,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderPlaced => "order_placed",
            EventType::OrderPickedUp => "order_picked_up",
            EventType::OrderDelivered => "order_delivered",
            EventType::OrderCancelled => "order_cancelled",
            EventType::RiderLocation => "rider_location",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the event is about an order (partitioned by `store_id` when produced).
    pub fn is_order_event(self) -> bool {
        self != EventType::RiderLocation
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `channel` of an `order_placed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `online`
    Online,
    /// `in_store`
    InStore,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Online => "online",
            Channel::InStore => "in_store",
        }
    }
}

/// `delivery_type` of an `order_placed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryType {
    /// `delivery`
    Delivery,
    /// `pickup`
    Pickup,
}

impl DeliveryType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryType::Delivery => "delivery",
            DeliveryType::Pickup => "pickup",
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// `product_id`
    pub product_id: Cow<'a, str>,
    /// `qty`, at least 1.
    pub qty: i64,
    /// `unit_price_cents`, at least 0.
    pub unit_price_cents: i64,
}

/// A valid event. Flat, like the raw lake table: the fields that the event's type
/// requires are always `Some`; fields that do not belong to its type are `None`
/// (the contract says they are ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// The de-duplication key.
    pub event_id: Cow<'a, str>,
    /// What happened.
    pub event_type: EventType,
    /// When it happened, epoch milliseconds UTC.
    pub event_time: i64,
    /// Order events; optional on `rider_location`.
    pub order_id: Option<Cow<'a, str>>,
    /// Order events.
    pub store_id: Option<Cow<'a, str>>,
    /// Pickups, deliveries and locations.
    pub rider_id: Option<Cow<'a, str>>,
    /// Optional on `order_placed`.
    pub customer_id: Option<Cow<'a, str>>,
    /// Optional on `order_placed`.
    pub channel: Option<Channel>,
    /// Optional on `order_placed`.
    pub delivery_type: Option<DeliveryType>,
    /// `order_placed`.
    pub total_cents: Option<i64>,
    /// `order_placed`.
    pub items: Option<Vec<Item<'a>>>,
    /// `rider_location`.
    pub lat: Option<f64>,
    /// `rider_location`.
    pub lon: Option<f64>,
    /// Optional on `rider_location`.
    pub speed_mps: Option<f64>,
    /// Optional on `order_cancelled`.
    pub reason: Option<Cow<'a, str>>,
}

impl<'a> Event<'a> {
    /// An event of `event_type` with only the common fields set.
    pub fn new(event_id: impl Into<Cow<'a, str>>, event_type: EventType, event_time: i64) -> Self {
        Event {
            event_id: event_id.into(),
            event_type,
            event_time,
            order_id: None,
            store_id: None,
            rider_id: None,
            customer_id: None,
            channel: None,
            delivery_type: None,
            total_cents: None,
            items: None,
            lat: None,
            lon: None,
            speed_mps: None,
            reason: None,
        }
    }

    /// The key a producer partitions by: `store_id` for order events, `rider_id` for
    /// `rider_location` (CONTRACT §1).
    pub fn partition_key(&self) -> &str {
        let key = if self.event_type.is_order_event() {
            &self.store_id
        } else {
            &self.rider_id
        };
        key.as_deref().unwrap_or("")
    }

    /// Sum of `qty` over the items (0 without items), saturating rather than
    /// overflowing on absurd quantities.
    pub fn items_sold(&self) -> i64 {
        self.items.as_ref().map_or(0, |items| {
            items.iter().fold(0i64, |acc, i| acc.saturating_add(i.qty))
        })
    }
}
