//! The order service (work in progress: see issue 11).
