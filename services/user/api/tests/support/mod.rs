//! Test support: user-srv's (included), and its in-process topology with a
//! user-api.
#![allow(dead_code)]

pub mod topology;
