//! One store, many processes, over a local Unix socket (not a network). redb lets one process
//! own a file; that process (the owner) serves the store on a socket beside it, and every other
//! process that opens the same path talks to it there instead ([`Node`] decides which, and
//! switches when the owner goes).
//!
//! - [`frame`]: length-prefixed postcard frames, versioned by the hello; the decoder is fuzzed.
//! - [`protocol`]: the requests and responses, batched (claim N, ack N per round trip).
//! - [`Server`]: the owner's side, with sessions, leases, rescue and fencing; it answers each
//!   request by calling the verb of the contract ([`crate::Jobs`]) on the owner's engine.
//! - [`Client`]: the other side, another implementation of [`crate::Jobs`].
//! - [`Node`]: holds the engine or the client as one `Arc<dyn Jobs>` ([`Node::jobs`]).

mod client;
pub mod frame;
mod handover;
mod node;
pub mod protocol;
mod server;
mod socket;

pub use client::{Client, ClientConfig, ConnectError, DEFAULT_ANSWER_TIMEOUT};
pub use frame::{MAX_FRAME, PROTOCOL_VERSION};
pub use node::{Node, NodeConfig, Role, TakeoverHook};
pub use server::Server;
pub use socket::socket_path;
