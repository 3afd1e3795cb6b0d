//! micro-selector
