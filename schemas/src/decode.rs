//! Validation and decoding of wire records (CONTRACT §1), with a precise reason for
//! every invalid record.
//!
//! Decoding is two-staged for speed: one pass of `serde_json` over the record captures
//! the raw text of the fields we know (unknown fields are skipped without being
//! decoded), then each field the event's type needs is checked on its own, which is
//! also what lets the error name the field and what was wrong with it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{Channel, DeliveryType, Event, EventType, Item};
use crate::time::parse_rfc3339_millis;

/// Why a record is invalid: a sentence for the dead-letter table's `error` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

fn invalid<T>(reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(reason.into()))
}

/// Whether a line holds a record at all: empty and whitespace-only lines are not
/// records (CONTRACT §1) and are neither read nor counted. Whitespace is Unicode's
/// (what `strip()` removes in most languages), not only JSON's four characters.
pub fn is_blank(line: &[u8]) -> bool {
    if line.iter().all(|&b| b.is_ascii_whitespace() || b == 0x0b) {
        return true;
    }
    if line.is_ascii() {
        return false;
    }
    std::str::from_utf8(line).is_ok_and(|s| s.chars().all(char::is_whitespace))
}

/// Whether well-formed JSON text has a `\u` escape of a lone surrogate anywhere (keys,
/// values, unknown fields). In valid JSON backslashes occur only inside strings, so a
/// byte scan suffices.
fn has_lone_surrogate(json: &[u8]) -> bool {
    let hex = |at: usize| -> Option<u32> {
        let digits = json.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut i = 0;
    while let Some(found) = memchr::memchr(b'\\', &json[i..]) {
        let at = i + found;
        if json.get(at + 1) != Some(&b'u') {
            i = at + 2; // a two-character escape such as \\ or \"
            continue;
        }
        let Some(code) = hex(at + 2) else { return true };
        i = at + 6;
        if (0xDC00..0xE000).contains(&code) {
            return true;
        }
        if (0xD800..0xDC00).contains(&code) {
            let low = if json.get(i..i + 2) == Some(b"\\u".as_slice()) {
                hex(i + 2)
            } else {
                None
            };
            match low {
                Some(low) if (0xDC00..0xE000).contains(&low) => i += 6,
                _ => return true,
            }
        }
    }
    false
}

/// Decodes and validates one record.
pub fn decode(record: &[u8]) -> Result<Event<'_>, Invalid> {
    // A byte-order mark is not part of the record (some editors start files with one).
    let record = record.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(record);
    let text = match std::str::from_utf8(record) {
        Ok(text) => text,
        Err(e) => return invalid(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
    };
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        // Still tell a syntax error from a well-formed non-object.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Err(e) => invalid(format!("invalid JSON: {e}")),
            Ok(_) => invalid(format!(
                "record is {}, not a JSON object",
                kind_of(text.trim())
            )),
        };
    }
    let fields: Fields<'_> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) => return invalid(format!("invalid JSON: {e}")),
    };
    // Unknown fields were skipped without decoding their strings, so a lone surrogate
    // escape there would pass unseen: scan for one (the contract makes such a record
    // invalid). Records with escapes are rare, so the common path pays one `memchr`.
    if memchr::memchr(b'\\', record).is_some() && has_lone_surrogate(record) {
        return invalid("invalid JSON: a string has a lone surrogate \\u escape");
    }
    fields.into_event()
}

/// The raw text of every field rushhour knows, captured in one pass.
#[derive(Default)]
struct Fields<'a> {
    event_id: Option<&'a RawValue>,
    event_type: Option<&'a RawValue>,
    event_time: Option<&'a RawValue>,
    order_id: Option<&'a RawValue>,
    store_id: Option<&'a RawValue>,
    rider_id: Option<&'a RawValue>,
    customer_id: Option<&'a RawValue>,
    channel: Option<&'a RawValue>,
    delivery_type: Option<&'a RawValue>,
    total_cents: Option<&'a RawValue>,
    items: Option<&'a RawValue>,
    lat: Option<&'a RawValue>,
    lon: Option<&'a RawValue>,
    speed_mps: Option<&'a RawValue>,
    reason: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                // A repeated key takes its last value, as most JSON readers do.
                while let Some(key) = map.next_key::<JsonStr<'de>>()? {
                    let slot = match key.0.as_ref() {
                        "event_id" => &mut fields.event_id,
                        "event_type" => &mut fields.event_type,
                        "event_time" => &mut fields.event_time,
                        "order_id" => &mut fields.order_id,
                        "store_id" => &mut fields.store_id,
                        "rider_id" => &mut fields.rider_id,
                        "customer_id" => &mut fields.customer_id,
                        "channel" => &mut fields.channel,
                        "delivery_type" => &mut fields.delivery_type,
                        "total_cents" => &mut fields.total_cents,
                        "items" => &mut fields.items,
                        "lat" => &mut fields.lat,
                        "lon" => &mut fields.lon,
                        "speed_mps" => &mut fields.speed_mps,
                        "reason" => &mut fields.reason,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let raw: &'de RawValue = map.next_value()?;
                    // `null` counts as absent (CONTRACT §1).
                    *slot = (raw.get() != "null").then_some(raw);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A JSON string, borrowed when it has no escapes.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// What kind of JSON value a raw text is, for error messages.
fn kind_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn required<'a>(name: &str, raw: Option<&'a RawValue>) -> Result<&'a RawValue, Invalid> {
    match raw {
        Some(raw) => Ok(raw),
        None => invalid(format!("missing required field `{name}`")),
    }
}

fn string<'a>(name: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, Invalid> {
    let text = raw.get();
    if !text.starts_with('"') {
        return invalid(format!(
            "field `{name}` must be a string, found {}",
            kind_of(text)
        ));
    }
    // The first pass already checked the string (control characters, escapes); one
    // without escapes is its bytes between the quotes, so it is not parsed again.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }
    match serde_json::from_str::<JsonStr<'a>>(text) {
        Ok(s) => Ok(s.0),
        Err(e) => invalid(format!("field `{name}`: invalid string: {e}")),
    }
}

fn integer(name: &str, raw: &RawValue) -> Result<i64, Invalid> {
    let text = raw.get();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return if kind_of(text) == "a number" {
            invalid(format!("field `{name}` must be an integer, found {text}"))
        } else {
            invalid(format!(
                "field `{name}` must be an integer, found {}",
                kind_of(text)
            ))
        };
    }
    match text.parse::<i64>() {
        Ok(v) => Ok(v),
        Err(_) => invalid(format!("field `{name}` is outside the INT64 range: {text}")),
    }
}

fn number(name: &str, raw: &RawValue) -> Result<f64, Invalid> {
    let text = raw.get();
    if kind_of(text) != "a number" {
        return invalid(format!(
            "field `{name}` must be a number, found {}",
            kind_of(text)
        ));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => invalid(format!(
            "field `{name}` must be a finite number, found {text}"
        )),
    }
}

fn opt<'a, T>(
    raw: Option<&'a RawValue>,
    f: impl FnOnce(&'a RawValue) -> Result<T, Invalid>,
) -> Result<Option<T>, Invalid> {
    raw.map(f).transpose()
}

impl<'a> Fields<'a> {
    fn into_event(self) -> Result<Event<'a>, Invalid> {
        let event_id = string("event_id", required("event_id", self.event_id)?)?;
        let type_name = string("event_type", required("event_type", self.event_type)?)?;
        let Some(event_type) = EventType::parse(&type_name) else {
            return invalid(format!("unknown event_type `{type_name}`"));
        };
        let time_text = string("event_time", required("event_time", self.event_time)?)?;
        let Some(event_time) = parse_rfc3339_millis(&time_text) else {
            return invalid(format!(
                "field `event_time` is not a valid RFC 3339 date-time: `{time_text}`"
            ));
        };
        let mut ev = Event::new(event_id, event_type, event_time);
        let req_str = |name: &str, raw| string(name, required(name, raw)?);
        match event_type {
            EventType::OrderPlaced => {
                ev.order_id = Some(req_str("order_id", self.order_id)?);
                ev.store_id = Some(req_str("store_id", self.store_id)?);
                ev.items = Some(items(required("items", self.items)?)?);
                ev.total_cents = Some(integer(
                    "total_cents",
                    required("total_cents", self.total_cents)?,
                )?);
                ev.customer_id = opt(self.customer_id, |r| string("customer_id", r))?;
                ev.channel = opt(self.channel, |r| match string("channel", r)?.as_ref() {
                    "online" => Ok(Channel::Online),
                    "in_store" => Ok(Channel::InStore),
                    other => invalid(format!(
                        "field `channel` must be `online` or `in_store`, found `{other}`"
                    )),
                })?;
                ev.delivery_type = opt(self.delivery_type, |r| {
                    match string("delivery_type", r)?.as_ref() {
                        "delivery" => Ok(DeliveryType::Delivery),
                        "pickup" => Ok(DeliveryType::Pickup),
                        other => invalid(format!(
                            "field `delivery_type` must be `delivery` or `pickup`, found `{other}`"
                        )),
                    }
                })?;
            }
            EventType::OrderPickedUp | EventType::OrderDelivered => {
                ev.order_id = Some(req_str("order_id", self.order_id)?);
                ev.store_id = Some(req_str("store_id", self.store_id)?);
                ev.rider_id = Some(req_str("rider_id", self.rider_id)?);
            }
            EventType::OrderCancelled => {
                ev.order_id = Some(req_str("order_id", self.order_id)?);
                ev.store_id = Some(req_str("store_id", self.store_id)?);
                ev.reason = opt(self.reason, |r| string("reason", r))?;
            }
            EventType::RiderLocation => {
                ev.rider_id = Some(req_str("rider_id", self.rider_id)?);
                let lat = number("lat", required("lat", self.lat)?)?;
                if !(-90.0..=90.0).contains(&lat) {
                    return invalid(format!("field `lat` must be within -90..90, found {lat}"));
                }
                let lon = number("lon", required("lon", self.lon)?)?;
                if !(-180.0..=180.0).contains(&lon) {
                    return invalid(format!("field `lon` must be within -180..180, found {lon}"));
                }
                ev.lat = Some(lat);
                ev.lon = Some(lon);
                ev.order_id = opt(self.order_id, |r| string("order_id", r))?;
                ev.speed_mps = opt(self.speed_mps, |r| number("speed_mps", r))?;
            }
        }
        Ok(ev)
    }
}

fn items(raw: &RawValue) -> Result<Vec<Item<'_>>, Invalid> {
    let text = raw.get();
    if !text.starts_with('[') {
        return invalid(format!(
            "field `items` must be an array, found {}",
            kind_of(text)
        ));
    }
    let elements: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return invalid(format!("field `items`: {e}")),
    };
    let mut out = Vec::with_capacity(elements.len());
    for (i, element) in elements.into_iter().enumerate() {
        let etext = element.get();
        if !etext.starts_with('{') {
            return invalid(format!(
                "items[{i}] must be an object, found {}",
                kind_of(etext)
            ));
        }
        let f: ItemFields<'_> = match serde_json::from_str(etext) {
            Ok(f) => f,
            Err(e) => return invalid(format!("items[{i}]: {e}")),
        };
        // Checked under the bare field name; the item's position goes into the message
        // only when there is one (formatting it for every item costs more than the check).
        let within = |field: &'static str| {
            move |e: Invalid| {
                Invalid(e.0.replacen(&format!("`{field}`"), &format!("`items[{i}].{field}`"), 1))
            }
        };
        let product_id = required("product_id", f.product_id)
            .and_then(|r| string("product_id", r))
            .map_err(within("product_id"))?;
        let qty = required("qty", f.qty)
            .and_then(|r| integer("qty", r))
            .map_err(within("qty"))?;
        if qty < 1 {
            return invalid(format!(
                "field `items[{i}].qty` must be at least 1, found {qty}"
            ));
        }
        let unit_price_cents = required("unit_price_cents", f.unit_price_cents)
            .and_then(|r| integer("unit_price_cents", r))
            .map_err(within("unit_price_cents"))?;
        if unit_price_cents < 0 {
            return invalid(format!(
                "field `items[{i}].unit_price_cents` must be at least 0, found {unit_price_cents}"
            ));
        }
        out.push(Item {
            product_id,
            qty,
            unit_price_cents,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct ItemFields<'a> {
    product_id: Option<&'a RawValue>,
    qty: Option<&'a RawValue>,
    unit_price_cents: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ItemFields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = ItemFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an item object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemFields<'de>, A::Error> {
                let mut fields = ItemFields::default();
                while let Some(key) = map.next_key::<JsonStr<'de>>()? {
                    let slot = match key.0.as_ref() {
                        "product_id" => &mut fields.product_id,
                        "qty" => &mut fields.qty,
                        "unit_price_cents" => &mut fields.unit_price_cents,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let raw: &'de RawValue = map.next_value()?;
                    *slot = (raw.get() != "null").then_some(raw);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(ItemVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACED: &str = r#"{"event_id":"e1","event_type":"order_placed","event_time":"2026-11-21T12:00:01.250Z","order_id":"o1","store_id":"s1","items":[{"product_id":"p1","qty":2,"unit_price_cents":450}],"total_cents":900,"channel":"online","delivery_type":"delivery","customer_id":"c1","extra":{"x":[1,2]}}"#;

    fn reason(line: &str) -> String {
        decode(line.as_bytes()).expect_err(line).0
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(PLACED).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn decodes_order_placed() {
        let ev = decode(PLACED.as_bytes()).unwrap();
        assert_eq!(ev.event_type, EventType::OrderPlaced);
        assert_eq!(ev.event_time, 1_795_262_401_250);
        assert_eq!(ev.items_sold(), 2);
        assert_eq!(ev.total_cents, Some(900));
        assert_eq!(ev.channel, Some(Channel::Online));
        assert!(matches!(ev.event_id, Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_nulls() {
        let line = with("customer_id", "null");
        assert_eq!(decode(line.as_bytes()).unwrap().customer_id, None);
        let line = with("store_id", r#""s\u00e9""#);
        assert_eq!(
            decode(line.as_bytes()).unwrap().store_id.as_deref(),
            Some("sé")
        );
        let line = with("items", "[]");
        assert_eq!(decode(line.as_bytes()).unwrap().items, Some(vec![]));
        // A raw control character inside a string is not JSON, escaped it is.
        let line = with("store_id", r#""aXb""#).replace("aXb", "a\tb");
        assert!(decode(line.as_bytes()).is_err(), "{line}");
        let line = with("store_id", r#""a\tb""#);
        assert_eq!(
            decode(line.as_bytes()).unwrap().store_id.as_deref(),
            Some("a\tb")
        );
    }

    #[test]
    fn invalid_records_say_why() {
        assert!(reason("{").starts_with("invalid JSON"));
        assert!(reason("[1]").contains("not a JSON object"));
        assert!(reason("42").contains("not a JSON object"));
        assert_eq!(
            reason(&with("store_id", "null")),
            "missing required field `store_id`"
        );
        assert_eq!(
            reason(&with("store_id", "7")),
            "field `store_id` must be a string, found a number"
        );
        assert_eq!(
            reason(&with("event_type", "\"order_eaten\"")),
            "unknown event_type `order_eaten`"
        );
        assert!(reason(&with("event_time", "\"2026-11-21T23:59:60Z\"")).contains("RFC 3339"));
        assert!(reason(&with("event_time", "\"2026-02-30T00:00:00Z\"")).contains("RFC 3339"));
        assert!(reason(&with("total_cents", "9.0")).contains("must be an integer, found 9.0"));
        assert!(reason(&with("total_cents", "1e3")).contains("must be an integer"));
        assert!(reason(&with("total_cents", "9223372036854775808")).contains("INT64"));
        assert!(
            reason(&with(
                "items",
                r#"[{"product_id":"p","qty":0,"unit_price_cents":1}]"#
            ))
            .contains("qty")
        );
        assert!(
            reason(&with(
                "items",
                r#"[{"product_id":"p","qty":1,"unit_price_cents":-1}]"#
            ))
            .contains("unit_price_cents")
        );
        assert_eq!(
            reason(&with("items", r#"[{"product_id":"p","qty":1}]"#)),
            "missing required field `items[0].unit_price_cents`"
        );
        assert_eq!(
            reason(&with(
                "items",
                r#"[{"product_id":"p","qty":1,"unit_price_cents":1},{"product_id":7,"qty":1.0,"unit_price_cents":1}]"#
            )),
            "field `items[1].product_id` must be a string, found a number"
        );
        assert_eq!(
            reason(&with(
                "items",
                r#"[{"product_id":"p","qty":1.0,"unit_price_cents":1}]"#
            )),
            "field `items[0].qty` must be an integer, found 1.0"
        );
        assert!(reason(&with("items", "{}")).contains("must be an array"));
        assert!(reason(&with("channel", "\"phone\"")).contains("channel"));
        assert!(reason(&with("delivery_type", "\"drone\"")).contains("delivery_type"));
        assert!(reason(r#"{"event_id":"e","event_type":"rider_location","event_time":"2026-11-21T12:00:00Z","rider_id":"r","lat":91,"lon":0}"#).contains("lat"));
        assert!(reason(r#"{"event_id":"e","event_type":"rider_location","event_time":"2026-11-21T12:00:00Z","rider_id":"r","lat":1,"lon":1e999}"#).contains("finite"));
        assert!(reason(r#"{"event_id":"e","event_type":"rider_location","event_time":"2026-11-21T12:00:00Z","rider_id":"r","lat":1,"lon":2,"order_id":5}"#).contains("order_id"));
    }

    #[test]
    fn bad_text_is_invalid() {
        let mut bytes = PLACED.as_bytes().to_vec();
        bytes[20] = 0xff;
        assert!(decode(&bytes).unwrap_err().0.contains("UTF-8"));
        // A lone surrogate in a known field and in an unknown one.
        let lone = PLACED.replace(r#""store_id":"s1""#, r#""store_id":"s\ud800""#);
        let reason = decode(lone.as_bytes()).unwrap_err().0;
        assert!(reason.contains("surrogate"), "{reason}");
        // A trailing surrogate alone, and an escaped backslash before `u` (no escape).
        let trailing = PLACED.replace(r#""extra":{"#, r#""n":"\udc00","extra":{"#);
        assert!(decode(trailing.as_bytes()).is_err());
        let escaped = PLACED.replace(r#""extra":{"#, r#""n":"\\ud800","extra":{"#);
        assert!(decode(escaped.as_bytes()).is_ok());
        // Escapes do not make foreign fields stricter.
        let foreign = PLACED.replace(r#""extra":{"#, r#""n":"caf\u00e9","big":1e999,"extra":{"#);
        assert!(decode(foreign.as_bytes()).is_ok());
        // A byte-order mark is not part of the record.
        assert!(decode(format!("\u{feff}{PLACED}").as_bytes()).is_ok());
        let unknown = PLACED.replace(r#""extra":{"#, r#""note":"\ud83d","extra":{"#);
        assert!(decode(unknown.as_bytes()).is_err());
        // A proper pair is fine.
        let pair = PLACED.replace(r#""extra":{"#, r#""note":"\ud83d\ude00","extra":{"#);
        assert!(decode(pair.as_bytes()).is_ok());
    }

    #[test]
    fn foreign_fields_are_ignored() {
        let line = r#"{"event_id":"e","event_type":"order_cancelled","event_time":"2026-11-21T12:00:00+01:00","order_id":"o","store_id":"s","lat":"north","items":5}"#;
        let ev = decode(line.as_bytes()).unwrap();
        assert_eq!(ev.lat, None);
        assert_eq!(ev.items, None);
        assert_eq!(ev.event_time, 1_795_258_800_000);
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t\r"));
        assert!(!is_blank(b" {}"));
        assert!(is_blank(b"\x0b\x0c"));
        assert!(is_blank("\u{a0}\u{2028}".as_bytes()));
        assert!(!is_blank(b"\xff"));
    }
}
