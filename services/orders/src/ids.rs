//! Ids the services make: random, so that several service processes never collide.

use rand::Rng;

fn hex(prefix: &str, bytes: usize) -> String {
    let mut rng = rand::rng();
    let mut out = String::with_capacity(prefix.len() + 2 * bytes);
    out.push_str(prefix);
    for _ in 0..bytes {
        let b: u8 = rng.random();
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

/// `ord-` and 16 hex digits.
pub fn order_id() -> String {
    hex("ord-", 8)
}

/// `po-` and 12 hex digits.
pub fn purchase_order_id() -> String {
    hex("po-", 6)
}

/// A random (version 4) UUID, as event ids are.
pub fn event_id() -> String {
    let h = hex("", 16);
    let variant = ['8', '9', 'a', 'b'][rand::rng().random_range(0..4)];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shapes_and_differ() {
        let id = event_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4");
        assert_ne!(event_id(), event_id());
        assert!(order_id().starts_with("ord-"));
        assert_eq!(order_id().len(), 20);
    }
}
