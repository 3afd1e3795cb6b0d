//! micro-testing
