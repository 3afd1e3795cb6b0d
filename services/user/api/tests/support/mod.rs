//! Test support: user-srv's (included), and its in-process topology with a
//! user-api.
#![allow(dead_code)]

#[path = "../../../srv/tests/support/served.rs"]
pub mod served;
pub mod topology;
