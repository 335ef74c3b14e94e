//! Event → wire JSON, for producers.
//!
//! Field order is fixed and only present fields are written, so the same event always
//! encodes to the same bytes (the generator's output is reproducible by seed).

use crate::event::Event;
use crate::time::write_millis;

/// Appends the wire JSON of `ev` (one object, no newline) to `out`.
pub fn encode(ev: &Event<'_>, out: &mut String) {
    out.push('{');
    push_str_field(out, "event_id", &ev.event_id, true);
    push_str_field(out, "event_type", ev.event_type.as_str(), false);
    out.push_str(",\"event_time\":\"");
    write_millis(out, ev.event_time);
    out.push('"');
    if let Some(v) = &ev.order_id {
        push_str_field(out, "order_id", v, false);
    }
    if let Some(v) = &ev.store_id {
        push_str_field(out, "store_id", v, false);
    }
    if let Some(v) = &ev.rider_id {
        push_str_field(out, "rider_id", v, false);
    }
    if let Some(v) = &ev.customer_id {
        push_str_field(out, "customer_id", v, false);
    }
    if let Some(v) = ev.channel {
        push_str_field(out, "channel", v.as_str(), false);
    }
    if let Some(v) = ev.delivery_type {
        push_str_field(out, "delivery_type", v.as_str(), false);
    }
    if let Some(items) = &ev.items {
        out.push_str(",\"items\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            push_str_field(out, "product_id", &item.product_id, true);
            push_int_field(out, "qty", item.qty);
            push_int_field(out, "unit_price_cents", item.unit_price_cents);
            out.push('}');
        }
        out.push(']');
    }
    if let Some(v) = ev.total_cents {
        push_int_field(out, "total_cents", v);
    }
    for (name, v) in [
        ("lat", ev.lat),
        ("lon", ev.lon),
        ("speed_mps", ev.speed_mps),
    ] {
        if let Some(v) = v {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            // `{:?}` prints the shortest text that reads back as the same f64.
            out.push_str(&format!("{v:?}"));
        }
    }
    if let Some(v) = &ev.reason {
        push_str_field(out, "reason", v, false);
    }
    out.push('}');
}

fn push_str_field(out: &mut String, name: &str, value: &str, first: bool) {
    if !first {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    push_json_str(out, value);
}

fn push_int_field(out: &mut String, name: &str, value: i64) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    out.push_str(&value.to_string());
}

/// Appends `value` as a JSON string literal.
pub fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::event::{Channel, EventType, Item};

    #[test]
    fn encode_then_decode_is_identity() {
        let mut ev = Event::new("e\"1", EventType::OrderPlaced, 1_795_262_401_250);
        ev.order_id = Some("o1".into());
        ev.store_id = Some("s\\1".into());
        ev.channel = Some(Channel::Online);
        ev.items = Some(vec![Item {
            product_id: "p\n".into(),
            qty: 2,
            unit_price_cents: 450,
        }]);
        ev.total_cents = Some(900);
        let mut out = String::new();
        encode(&ev, &mut out);
        assert_eq!(decode(out.as_bytes()).unwrap(), ev);

        let mut loc = Event::new("e2", EventType::RiderLocation, -5);
        loc.rider_id = Some("r".into());
        loc.lat = Some(40.712_776_1);
        loc.lon = Some(-74.0);
        loc.speed_mps = Some(0.1 + 0.2);
        let mut out = String::new();
        encode(&loc, &mut out);
        assert_eq!(decode(out.as_bytes()).unwrap(), loc);
    }
}

#[cfg(test)]
mod properties {
    //! Decoding is total (any bytes give an event or a reason, never a panic), and
    //! encoding any valid event decodes back to it.

    use proptest::prelude::*;

    use super::*;
    use crate::decode::decode;
    use crate::detached::Detached;
    use crate::event::{Channel, DeliveryType, EventType, Item};
    use crate::time::{MAX_MS, MIN_MS};

    fn id() -> impl Strategy<Value = String> {
        // Any text: quotes, backslashes, control characters and non-ASCII included.
        prop_oneof![any::<String>(), "[a-z0-9\"\\\\\n\u{1}é€😀]{0,8}"]
    }

    fn item() -> impl Strategy<Value = Item<'static>> {
        (id(), 1..=i64::MAX, 0..=i64::MAX).prop_map(|(p, qty, price)| Item {
            product_id: p.into(),
            qty,
            unit_price_cents: price,
        })
    }

    fn event() -> impl Strategy<Value = Event<'static>> {
        let kind = prop_oneof![
            Just(EventType::OrderPlaced),
            Just(EventType::OrderPickedUp),
            Just(EventType::OrderDelivered),
            Just(EventType::OrderCancelled),
            Just(EventType::RiderLocation),
        ];
        let common = (id(), kind, MIN_MS..=MAX_MS, id(), id(), id());
        let placed = (
            proptest::option::of(id()),
            proptest::option::of(prop_oneof![Just(Channel::Online), Just(Channel::InStore)]),
            proptest::option::of(prop_oneof![
                Just(DeliveryType::Delivery),
                Just(DeliveryType::Pickup)
            ]),
            any::<i64>(),
            proptest::collection::vec(item(), 0..3),
        );
        let rest = (
            -90.0..=90.0f64,
            -180.0..=180.0f64,
            proptest::option::of(any::<f64>().prop_filter("finite", |v| v.is_finite())),
            proptest::option::of(id()),
            proptest::option::of(id()),
        );
        (common, placed, rest).prop_map(|((eid, kind, time, order, store, rider), placed, rest)| {
            let (customer, channel, delivery, total, items) = placed;
            let (lat, lon, speed, loc_order, reason) = rest;
            let mut ev = Event::new(eid, kind, time);
            match kind {
                EventType::OrderPlaced => {
                    ev.order_id = Some(order.into());
                    ev.store_id = Some(store.into());
                    ev.customer_id = customer.map(Into::into);
                    ev.channel = channel;
                    ev.delivery_type = delivery;
                    ev.total_cents = Some(total);
                    ev.items = Some(items);
                }
                EventType::OrderPickedUp | EventType::OrderDelivered => {
                    ev.order_id = Some(order.into());
                    ev.store_id = Some(store.into());
                    ev.rider_id = Some(rider.into());
                }
                EventType::OrderCancelled => {
                    ev.order_id = Some(order.into());
                    ev.store_id = Some(store.into());
                    ev.reason = reason.map(Into::into);
                }
                EventType::RiderLocation => {
                    ev.rider_id = Some(rider.into());
                    ev.lat = Some(lat);
                    ev.lon = Some(lon);
                    ev.speed_mps = speed;
                    ev.order_id = loc_order.map(Into::into);
                }
            }
            ev
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_valid_event_round_trips(ev in event()) {
            let mut wire = String::new();
            encode(&ev, &mut wire);
            let back = decode(wire.as_bytes());
            prop_assert_eq!(back.as_ref().ok(), Some(&ev), "{}", wire);
            // The detached form (how decoded events cross threads) attaches back to it.
            let detached = Detached::new(back.unwrap(), wire.as_bytes());
            prop_assert_eq!(detached.attach(wire.as_bytes()), Some(ev));
        }

        #[test]
        fn any_bytes_decode_or_give_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(reason) = decode(&bytes) {
                prop_assert!(!reason.0.is_empty());
            }
        }

        #[test]
        fn damaged_events_never_panic(
            ev in event(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
        ) {
            let mut wire = String::new();
            encode(&ev, &mut wire);
            let mut bytes = wire.into_bytes();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            if let Err(reason) = decode(&bytes) {
                prop_assert!(!reason.0.is_empty());
            }
        }
    }
}
