//! Test support: a private PostgreSQL, an in-process topology, log capture,
//! what a server says it serves.
#![allow(dead_code)]

pub mod postgres;
pub mod served;
pub mod topology;
