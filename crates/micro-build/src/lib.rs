//! micro-build
