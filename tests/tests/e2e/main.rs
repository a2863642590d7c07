//! Parley's end-to-end tests: each module is one area of the contract, and every case starts a
//! real server on an ephemeral port and talks gRPC to it, on SQLite and on PostgreSQL.
//!
//! They are modules of one test binary rather than one binary per file: every binary links the
//! whole server, the SDK and both database drivers, so one link instead of twenty keeps the
//! build fast and its disk use small.

mod sdk_support;

mod auth_and_input;
mod batch_cost;
mod bounds;
mod check_access;
mod check_order;
mod concurrency;
mod conversations;
mod database_outage;
mod directory;
mod directory_import;
mod export;
mod housekeeping;
mod invitation_links;
mod invitations;
mod metrics;
mod model;
mod notifications;
mod participants;
mod public_key;
mod query_plans;
mod rate_limit;
mod request_records;
mod retries;
mod roster;
mod sdk_errors;
mod sdk_errors_roster;
mod sdk_paging;
mod sdk_retry;
mod sdk_streams;
mod sdk_watch;
mod sqlite_writer;
mod stream_notifications;
mod timeline;
mod tls;
mod tokens;
mod update_and_roles;
mod validation;
mod viewers;
mod watch_inbox;
mod watch_timeline;
mod write_conflicts;
mod write_groups;
