//! Flow filters and field masks.
