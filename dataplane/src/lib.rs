//! Lumen node agent library.
