//! The dispatch service (work in progress: see issue 11).
