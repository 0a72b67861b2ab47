//! What a client of the REST API sends to say who it is.
//!
//! A leaf shared by the server's auth (which reads the header) and the CLI (which sends it
//! when it forwards a command to the server holding the store), so the CLI need not import
//! the HTTP routes.

/// Header a client names itself with, so the audit trail records who acted.
pub const CLIENT_HEADER: &str = "x-eventvault-client";

/// Value of [`CLIENT_HEADER`] that the CLI sends: the audit trail records actor `cli`.
pub const CLI: &str = "cli";
