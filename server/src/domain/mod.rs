//! Parley's rules, free of transport and persistence: who may do what to a conversation,
//! what a valid request looks like, and what each participant may see.

pub mod conversation_ops;
pub mod invitation_ops;
pub mod model;
pub mod notify;
pub mod paging;
pub mod principal;
pub mod roster;
pub mod rules;
pub mod validate;
pub mod visibility;
