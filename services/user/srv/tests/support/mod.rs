//! Test support: a private PostgreSQL, an in-process topology, log capture.
#![allow(dead_code)]

pub mod postgres;
pub mod topology;
