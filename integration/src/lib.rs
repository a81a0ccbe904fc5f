//! The namespace lab.
