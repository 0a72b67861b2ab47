//! Integration tests: real `eventvault` processes driven over HTTP.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod backup;
mod bad_input;
mod bus;
mod crud;
mod readme;
mod restart;
mod restore;
mod worker;
