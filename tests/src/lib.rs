//! Harness: real PostgreSQL clusters for end-to-end tests.
