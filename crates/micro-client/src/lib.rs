//! micro-client
