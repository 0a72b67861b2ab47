//! The backup repository (issue 11, in progress): whole-store backups stored once per file
//! and kept by a GFS policy, in a local folder or an S3 bucket.
//!
//! What is here so far: [`retention`], the GFS policy with restic's `forget` semantics.

pub mod retention;
