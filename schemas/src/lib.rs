//! The vocabulary of rushhour, with no I/O: the wire events (CONTRACT §1), their
//! validation with a reason for every invalid record, the Arrow schemas of every lake
//! table (CONTRACT §3–4), JSON → Arrow builders, and event time.
//!
//! Every other crate speaks in these types, so a change to the contract lands here
//! first.

pub mod builders;
pub mod decode;
pub mod detached;
pub mod encode;
pub mod endpoint;
pub mod event;
pub mod tables;
pub mod time;

pub use builders::{DeadLetterBuilder, Provenance, RawEventsBuilder};
pub use decode::{Invalid, decode, is_blank};
pub use detached::Detached;
pub use encode::encode;
pub use endpoint::{BadEndpoint, Endpoint};
pub use event::{Channel, DeliveryType, Event, EventType, Item};
pub use tables::Table;

/// The watermark before any record: minus infinity.
pub const NO_WATERMARK: i64 = i64::MIN;
