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
