//! Integration tests: real `eventvault` processes driven over HTTP.

#[path = "../common/mod.rs"]
mod common;

mod admin_page;
mod auth;
mod backup;
mod bad_input;
mod browse_audit;
mod bus;
mod cli;
mod crud;
mod drill;
mod drill_churn;
mod event_backup;
mod full_disk;
mod garage;
mod hostile_archive;
mod hostile_event;
mod hostile_review;
mod log_hostile;
mod migrate;
mod monitoring;
mod openapi;
mod options;
mod pitr;
mod readme;
mod repo;
mod repo_crypt;
mod restart;
mod restore;
mod s3_tools;
mod shipping;
mod standby;
mod timeline;
mod worker;
