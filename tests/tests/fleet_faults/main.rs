//! Issue 9: faults the fleet must survive, judged from outside (nginx's `/stat`
//! and access log, Redis, RabbitMQ's queues, callbacks, the processes' logs).
//! One binary so its tests share a build and run side by side; the scorecard
//! is docs/RELIABILITY.md.
//!
//! - `cutoff`: row 5, a worker cut off from RabbitMQ while its media flows.
//! - `poison`: row 3, a command that fails its handler every time, and one
//!   that crashes its consumer.
//! - `broker_kill`: row 1, confirmed commands while RabbitMQ is `kill -9`ed
//!   (a small run here; the 10,000-command run is `scripts/soak/faults.sh broker-kill`).
//! - `broker_outage`: row 6, RabbitMQ away for more than two leases; and
//!   `broker_down`, the 60 s run (`scripts/soak/faults.sh broker-down`).
//! - `malformed`: row 12, media that is not what it claims to be.

mod broker_down;
mod broker_kill;
mod broker_outage;
mod cutoff;
mod malformed;
mod poison;
